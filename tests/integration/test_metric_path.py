"""The one-hop metric path through the real broker: owners, forwards once, dedup on the owner, clean-topic guard."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.scoring.logic.hops import HOP_HEADER, SCORED
from streams import topics as T
from streams.ownership import owner_partition
from streams.records import metric_series_key
from tests.conftest import Backend
from tests.kafka_utils import envelope, start_kaizen

PARTITIONS = 4


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of the module's own: its worker's new consumer group reads the topics from the beginning."""
    return own_backend


@pytest.fixture(scope="module")
def worker(backend: Backend) -> Iterator[None]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-path-{uuid.uuid4().hex[:6]}",
           "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS)}
    proc = start_kaizen(["worker"], env, "metric-path-worker")
    try:
        yield
    finally:
        proc.stop()


def _points(tenant: str, series: int, per_series: int) -> list[dict[str, Any]]:
    return [{"metric_name": "Latency", "value": 100.0 + i % 7, "unit": "Milliseconds",
             "timestamp": 1_700_000_000 + 60 * (i // series), "tenant_id": tenant, "namespace": "Test/Path",
             "dimensions": {"service": f"s{i % series}"}} for i in range(series * per_series)]


def _series(p: dict[str, Any]) -> str:
    return metric_series_key(p["tenant_id"], p["namespace"], p["metric_name"], "Average", p["dimensions"])


async def _read(bootstrap: str, topic: str, tenant: str, until: Any, timeout: float = 45.0,
                settle: float = 2.0) -> list[tuple[int, dict[str, Any], bytes | None]]:
    """(partition, record, kaizen-hop header) of the tenant's records on `topic`, envelopes unpacked."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                         enable_auto_commit=False)
    await c.start()
    out: list[tuple[int, dict[str, Any], bytes | None]] = []
    deadline = time.monotonic() + timeout
    settled: float | None = None
    try:
        while time.monotonic() < deadline and (settled is None or time.monotonic() < settled):
            for tp, msgs in (await c.getmany(timeout_ms=300)).items():
                for m in msgs:
                    if not m.value or tenant.encode() not in m.value:
                        continue
                    body = orjson.loads(m.value)
                    hop = dict(m.headers or ()).get(HOP_HEADER)
                    for r in body.get("records", [body]) if isinstance(body, dict) else []:
                        if r.get("tenant_id") == tenant or tenant in str(r.get("series", "")):
                            out.append((tp.partition, r, hop))
            if settled is None and until(out):
                settled = time.monotonic() + settle
    finally:
        await c.stop()
    return out


async def _dead_letter_reasons(bootstrap: str, tenant: str, timeout: float = 45.0) -> list[str]:
    """The reasons of the dead letters whose original names the tenant."""
    c = AIOKafkaConsumer(T.DEADLETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                         enable_auto_commit=False)
    await c.start()
    reasons: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not reasons:
            for msgs in (await c.getmany(timeout_ms=300)).values():
                reasons += [orjson.loads(m.value)["reason"] for m in msgs if m.value and tenant.encode() in m.value]
    finally:
        await c.stop()
    return reasons


async def test_points_on_every_partition_pass_once_on_their_owner(backend: Backend, worker: None) -> None:
    """The same envelope written to every raw partition (3 of the 4 copies are off their owner): each
    point reaches the clean topic exactly once, on its owner's partition, marked as scored."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    pts = _points(tenant, 12, 3)
    p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await p.start()
    try:
        for part in range(PARTITIONS):
            await p.send_and_wait(T.RAW_TOPICS["metric"], envelope(pts), partition=part, key=tenant.encode())
    finally:
        await p.stop()
    got = await _read(backend.kafka_bootstrap, T.CLEAN_TOPICS["metric"], tenant, lambda o: len(o) >= len(pts))
    ids = [r["event_id"] for _, r, _ in got]
    assert len(ids) == len(pts) and len(set(ids)) == len(pts), f"{len(ids)} clean records for {len(pts)} points"
    assert all(part == owner_partition(r["series"], PARTITIONS) for part, r, _ in got), "a point off its owner"
    assert all(hop == SCORED for _, _, hop in got)
    scores = await _read(backend.kafka_bootstrap, T.SERIES, tenant,
                         lambda o: {r["series"] for _, r, _ in o} >= {_series(x) for x in pts}, settle=0.5)
    assert {r["series"] for _, r, _ in scores} >= {_series(x) for x in pts}, "a series was not scored"


async def test_a_point_written_to_the_clean_topic_is_scored_not_duplicated(backend: Backend, worker: None) -> None:
    """Another producer's record on the clean topic is checked, forwarded to its owner and scored there,
    and not written to the clean topic a second time."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    pts = _points(tenant, 1, 2)
    p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await p.start()
    try:
        await p.send_and_wait(T.CLEAN_TOPICS["metric"], envelope(pts), partition=0)
    finally:
        await p.stop()
    scores = await _read(backend.kafka_bootstrap, T.SERIES, tenant, lambda o: bool(o), settle=0.5)
    assert scores and scores[0][1]["series"] == _series(pts[0]), "the hand-written point was not scored"
    clean = await _read(backend.kafka_bootstrap, T.CLEAN_TOPICS["metric"], tenant, lambda o: len(o) >= 2, settle=3.0)
    assert len(clean) == 2 and all(hop is None for _, _, hop in clean), "written to the clean topic again"


async def test_a_forged_forward_cannot_write_into_another_series(backend: Backend, worker: None) -> None:
    """A record with the forwarded header and the form of a lean point that names another tenant's series
    (anyone producing to the raw topic can set the header) is scored under the series its own fields give,
    on the partition owning that one; the named series gets nothing."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    victim = f"v-{uuid.uuid4().hex[:8]}"
    p = _points(tenant, 1, 1)[0]
    mine = _series(p)
    theirs = metric_series_key(victim, p["namespace"], p["metric_name"], "Average", p["dimensions"])
    forged = {**p, "statistic": "Average", "timestamp": float(p["timestamp"]), "series": theirs,
              "component": "not-the-service", "event_id": f"e-{uuid.uuid4().hex}"}
    wrong = (owner_partition(theirs, PARTITIONS) + 1) % PARTITIONS
    if wrong == owner_partition(mine, PARTITIONS):
        wrong = (wrong + 1) % PARTITIONS
    prod = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await prod.start()
    try:
        await prod.send_and_wait(T.RAW_TOPICS["metric"], envelope([forged]), partition=wrong,
                                 headers=[(HOP_HEADER, b"forwarded")])
    finally:
        await prod.stop()
    scores = await _read(backend.kafka_bootstrap, T.SERIES, tenant, lambda o: bool(o), settle=3.0)
    assert [r["series"] for _, r, _ in scores] == [mine], "not scored under the series its fields give"
    assert scores[0][1]["component"] == p["dimensions"]["service"]
    clean = await _read(backend.kafka_bootstrap, T.CLEAN_TOPICS["metric"], tenant, lambda o: bool(o), settle=2.0)
    assert [(part, r["series"]) for part, r, _ in clean] == [(owner_partition(mine, PARTITIONS), mine)], \
        "not deduplicated and written out by the partition owning its series"


async def test_a_forwarded_point_is_held_to_the_ingest_limits(backend: Backend, worker: None) -> None:
    """A point with the forwarded header skips the raw decoder, so the owner holds it to the same limits: one
    whose metric name is over INGEST_MAX_IDENTIFIER_LENGTH (512) is dead-lettered with that rule and never
    scored, while a sound point of the same forwarded message is."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    good, long_named = _points(tenant, 2, 1)
    long_named["metric_name"] = "L" * 600
    lean = [{**p, "statistic": "Average", "timestamp": float(p["timestamp"]), "series": _series(p),
             "component": p["dimensions"]["service"], "event_id": f"e-{uuid.uuid4().hex}"} for p in (good, long_named)]
    prod = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await prod.start()
    try:
        for p in lean:  # each on the partition owning its series, as kaizen forwards
            await prod.send_and_wait(T.RAW_TOPICS["metric"], envelope([p]),
                                     partition=owner_partition(p["series"], PARTITIONS),
                                     headers=[(HOP_HEADER, b"forwarded")])
    finally:
        await prod.stop()
    reasons = await _dead_letter_reasons(backend.kafka_bootstrap, tenant)
    assert any(r.startswith("identifier too long: metric_name has 600 characters") for r in reasons), reasons
    scores = await _read(backend.kafka_bootstrap, T.SERIES, tenant, lambda o: bool(o), settle=3.0)
    assert [r["series"] for _, r, _ in scores] == [lean[0]["series"]], "the long-named point was scored"
