"""Dedup through the real broker: clean topics, window, dead letters, restart."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

WINDOW = 4


def _metric(tenant: str, i: int, **extra: object) -> dict[str, object]:
    return {"metric_name": "Latency", "value": float(i), "unit": "Milliseconds", "timestamp": 1_700_000_000 + i,
            "tenant_id": tenant, "namespace": "Test/Dedup", "dimensions": {"service": "api"}, **extra}


@pytest.fixture(scope="module")
def worker_env(backend: Backend) -> dict[str, str]:
    return {**backend.env(), "KAIZEN_APP_ID": f"kz-dedup-{uuid.uuid4().hex[:6]}",
            "CLOUDWATCH_EVENT_DEDUP_WINDOW_SECONDS": str(WINDOW), "KAFKA_TOPIC_PARTITIONS": "4"}


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str]) -> Iterator[None]:
    proc = start_kaizen(["worker"], worker_env, "dedup-worker")
    try:
        yield
    finally:
        proc.stop()


def _for(tenant: str):  # type: ignore[no-untyped-def]
    return lambda _topic, rec: rec.get("tenant_id") == tenant or tenant in str(rec.get("original", ""))


async def test_records_reach_clean_topics_and_bad_ones_are_dead_lettered(backend: Backend, worker: None) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    good = [_metric(tenant, i) for i in range(5)]
    bad_missing = {"value": 1.0, "tenant_id": tenant, "timestamp": 1}  # no metric_name
    bad_type = _metric(tenant, 99, value="fast")
    log = {"log_group": "/aws/lambda/app", "message": "ERROR timeout", "timestamp": 1_700_000_000,
           "tenant_id": tenant, "severity": "ERROR"}
    event = {"event_type": "alarm", "source": "aws.cloudwatch", "timestamp": 1_700_000_000, "tenant_id": tenant,
             "detail": {"alarm_name": "HighLatency", "new_state": "ALARM"}}
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(good + [bad_missing, bad_type])])
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [b"{not json " + tenant.encode()])
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope([log])])
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["event"], [envelope([event])])

    def done(pairs: list) -> bool:  # type: ignore[type-arg]
        topics = [t for t, _ in pairs]
        return (topics.count(T.CLEAN_TOPICS["metric"]) >= 5 and T.CLEAN_TOPICS["log"] in topics
                and T.CLEAN_TOPICS["event"] in topics and topics.count(T.DEADLETTER) >= 3)

    pairs = await collect(backend.kafka_bootstrap, [*T.CLEAN_TOPICS.values(), T.DEADLETTER], done,
                          keep=_for(tenant), settle=1.0)
    metrics = [r for t, r in pairs if t == T.CLEAN_TOPICS["metric"]]
    dead = [r for t, r in pairs if t == T.DEADLETTER]
    assert sorted(m["value"] for m in metrics) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(m["event_id"] for m in metrics)
    assert len(dead) == 3, dead
    reasons = " | ".join(d["reason"] for d in dead)
    assert "metric_name" in reasons and "value" in reasons and "not valid JSON" in reasons
    for d in dead:
        assert d["source_topic"] == T.RAW_TOPICS["metric"] and d["offset"] >= 0 and d["original"]
    batch_dead = [d for d in dead if d["index_in_batch"] is not None]
    assert sorted(d["index_in_batch"] for d in batch_dead) == [5, 6]


async def test_duplicates_inside_window_dropped_outside_kept(backend: Backend, worker: None) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    rec = _metric(tenant, 1)
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope([rec]), envelope([rec, rec])], key=tenant.encode())
    first = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= 1,
                          keep=_for(tenant), settle=2.0)
    assert len(first) == 1, "the same event id inside the window must pass once"
    time.sleep(WINDOW + 2)
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope([rec])], key=tenant.encode())
    second = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= 2,
                           keep=_for(tenant), settle=1.0)
    assert len(second) == 2, "outside the window the same event id is kept again"


async def test_dedup_state_survives_worker_restart(backend: Backend) -> None:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-restart-{uuid.uuid4().hex[:6]}",
           "CLOUDWATCH_EVENT_DEDUP_WINDOW_SECONDS": "300"}
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    recs = [_metric(tenant, i) for i in range(20)]
    w1 = start_kaizen(["worker"], env, "restart-worker-1")
    try:
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(recs)], key=tenant.encode())
        pairs = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= 20,
                              keep=_for(tenant))
        assert len(pairs) == 20
    finally:
        w1.stop()
    w2 = start_kaizen(["worker"], env, "restart-worker-2")
    try:
        # The same 20 again plus 5 new ones: only the new ones may pass.
        new = [_metric(tenant, 100 + i) for i in range(5)]
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(recs + new)], key=tenant.encode())
        pairs = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= 25,
                              keep=_for(tenant), settle=3.0)
        values = sorted(r["value"] for _, r in pairs)
        assert len(pairs) == 25, f"duplicates passed after restart: {len(pairs) - 25}"
        assert values[-5:] == [100.0, 101.0, 102.0, 103.0, 104.0]
    finally:
        w2.stop()
