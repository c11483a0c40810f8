"""10,000 fuzzed bad metric records (hypothesis) among good ones: every bad one is dead-lettered
with a reason and its original bytes, every good one reaches the clean topic — records in = clean +
dead-lettered, exactly. "Bad" is what the ingest contract rejects (the model and the README's limits:
non-finite values in any spelling, implausible timestamps, over-long identifiers, too many dimensions)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams import topics as T
from streams.codec import decode_metrics_lean
from streams.contract import Limits
from streams.records import MetricDataPoint
from tests.conftest import Backend
from tests.kafka_utils import collect, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

BAD_COUNT = 10_000
GOOD_COUNT = 2_000
PER_ENVELOPE = 100

_HOSTILE = ["NaN", "nan", "Infinity", "-inf", "1e400", "-1e400", "x" * 600, "9999-12-31T00:00:00Z",
            "1970-01-01T00:00:00Z", "", " "]
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                          st.text(max_size=12), st.sampled_from(_HOSTILE))
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)
_FIELDS = ("metric_name", "value", "unit", "dimensions", "timestamp", "tenant_id", "namespace", "statistic", "event_id")


def _good(tenant: str, i: int) -> dict[str, Any]:
    return {"metric_name": "Latency", "value": float(i), "unit": "Milliseconds", "timestamp": 1_700_000_000 + i,
            "tenant_id": tenant, "namespace": "Test/Fuzz", "dimensions": {"service": "api"},
            "event_id": f"{tenant}-good-{i}"}


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    """A good record with fields dropped and/or replaced by arbitrary JSON, or any non-object JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json.filter(lambda v: not isinstance(v, dict)))
    rec: dict[str, Any] = _good("fuzz", draw(st.integers(0, 10**6)))
    for name in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3, unique=True)):
        if draw(st.booleans()):
            rec.pop(name, None)
        else:
            rec[name] = draw(_json)
    if not _invalid(rec):  # the mutation happened to be acceptable (e.g. a new unit): make it bad
        rec.pop("metric_name", None)
    return rec


def _invalid(item: Any) -> bool:
    """What the dedup agent dead-letters: the model's rules and the contract's limits (streams/contract.py)."""
    if not isinstance(item, dict):
        return True
    try:
        MetricDataPoint.model_validate(item)
    except (ValidationError, ValueError):
        return True
    return bool(decode_metrics_lean(orjson.dumps(item), topic="t", now=time.time(), limits=Limits()).dead)


def fuzzed_bad_records(n: int, copies: int = 5) -> list[Any]:
    """n records the model rejects: n / copies distinct shapes drawn by hypothesis (derandomized, so the
    same every run), each sent `copies` times (objects tagged with an extra, ignored field) — drawing all
    10,000 with hypothesis alone would take ~30 s on this machine."""
    shapes: list[Any] = []

    @settings(max_examples=n // copies, database=None, derandomize=True, phases=[Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(_mutated())
    def draw(item: Any) -> None:
        shapes.append(item)

    draw()
    out = [({**s, "fuzz_copy": k} if isinstance(s, dict) else s) for s in shapes for k in range(copies)]
    return out[:n]


@pytest.fixture(scope="module")
def worker_env(backend: Backend) -> Iterator[dict[str, str]]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-fuzz-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4"}
    proc = start_kaizen(["worker"], env, "fuzz-worker")
    try:
        yield env
    finally:
        proc.stop()


async def test_ten_thousand_fuzzed_bad_records_dead_lettered_good_ones_pass(
        backend: Backend, worker_env: dict[str, str]) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    bad = fuzzed_bad_records(BAD_COUNT)
    assert len(bad) == BAD_COUNT and all(_invalid(b) for b in bad)
    good = [_good(tenant, i) for i in range(GOOD_COUNT)]
    items: list[tuple[bool, Any]] = [(False, b) for b in bad] + [(True, g) for g in good]
    random.Random(7).shuffle(items)

    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    expected_bad: set[tuple[int, int, int]] = set()  # (partition, offset, index in envelope)
    try:
        for start in range(0, len(items), PER_ENVELOPE):
            chunk = items[start:start + PER_ENVELOPE]
            meta = await producer.send_and_wait(T.RAW_TOPICS["metric"], orjson.dumps({"records": [r for _, r in chunk]}),
                                                key=tenant.encode())
            expected_bad |= {(meta.partition, meta.offset, i) for i, (ok, _) in enumerate(chunk) if not ok}
    finally:
        await producer.stop()
    offsets = {(p, o) for p, o, _ in expected_bad}
    good_ids = {g["event_id"] for g in good}

    def mine(topic: str, rec: dict[str, Any]) -> bool:
        if topic == T.DEADLETTER:
            return rec.get("source_topic") == T.RAW_TOPICS["metric"] and (rec.get("partition"), rec.get("offset")) in offsets
        return rec.get("tenant_id") == tenant

    def done(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
        dead = sum(1 for t, _ in pairs if t == T.DEADLETTER)
        clean = sum(1 for t, _ in pairs if t != T.DEADLETTER)
        return dead >= BAD_COUNT and clean >= GOOD_COUNT

    pairs = await collect(backend.kafka_bootstrap, [T.DEADLETTER, T.CLEAN_TOPICS["metric"]], done, keep=mine,
                          timeout=50, settle=1.0)
    dead = [r for t, r in pairs if t == T.DEADLETTER]
    clean_ids = [r["event_id"] for t, r in pairs if t != T.DEADLETTER]
    got_bad = {(d["partition"], d["offset"], d["index_in_batch"]) for d in dead}
    assert got_bad == expected_bad, f"missing {len(expected_bad - got_bad)}, unexpected {len(got_bad - expected_bad)}"
    assert len(dead) == BAD_COUNT, "a bad record was dead-lettered more than once"
    assert all(d["reason"].strip() and d["original"] for d in dead)
    assert set(clean_ids) == good_ids and len(clean_ids) == GOOD_COUNT, "good records lost or doubled"
    # The original is the record itself (JSON), so it can be inspected and replayed after a fix.
    for d in dead[:200]:
        orjson.loads(d["original"])
