"""A backlog's end is committed at once (streams/commits.py), not at the next commit tick: with the commit
timer set to 120 s, a worker that handled a burst has its offsets committed on the raw metric topic and on
the clean topic (the clean-topic guard's) well before the timer would have committed anything."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from benchmarks.common import CommitWatcher, count_messages
from streams import topics as T
from streams.ownership import owner_partition
from streams.records import metric_series_key
from tests.conftest import Backend
from tests.kafka_utils import envelope, start_kaizen

PARTITIONS = 4
TIMER_SECONDS = 120.0


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    return own_backend


def _points(n_series: int, per_series: int) -> dict[int, list[dict[str, Any]]]:
    """Points keyed to the raw partition owning their series, as the connectors write them."""
    by_owner: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}
    for i in range(n_series * per_series):
        pt = {"metric_name": "Latency", "value": 100.0 + i % 7, "unit": "Milliseconds",
              "timestamp": int(time.time()) - 600 + i // n_series, "tenant_id": "early", "namespace": "Test/Commit",
              "dimensions": {"service": f"s{i % n_series}"}}
        key = metric_series_key("early", "Test/Commit", "Latency", "Average", pt["dimensions"])
        by_owner[owner_partition(key, PARTITIONS)].append(pt)
    return by_owner


async def _produce(bootstrap: str, by_owner: dict[int, list[dict[str, Any]]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1)
    await p.start()
    try:
        for part, pts in by_owner.items():
            for i in range(0, len(pts), 50):
                await p.send_and_wait(T.RAW_TOPICS["metric"], envelope(pts[i:i + 50]), partition=part)
    finally:
        await p.stop()


async def _committed_up_to(bootstrap: str, group: str, topic: str, want: dict[int, int], deadline: float) -> bool:
    async with CommitWatcher(bootstrap, group) as w:
        while time.monotonic() < deadline:
            got = await w.committed(topic, range(PARTITIONS))
            if all(got[p] >= n for p, n in want.items()):
                return True
            await asyncio.sleep(0.5)
    return False


def test_a_burst_is_committed_before_the_commit_timer_fires(backend: Backend) -> None:
    group = f"kz-early-{uuid.uuid4().hex[:6]}"
    env = {**backend.env(), "KAIZEN_APP_ID": group, "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
           "KAIZEN_COMMIT_INTERVAL_SECONDS": str(TIMER_SECONDS)}
    started = time.monotonic()
    proc = start_kaizen(["worker"], env, "early-commit-worker")
    try:
        asyncio.run(_produce(backend.kafka_bootstrap, _points(40, 10)))
        raw = asyncio.run(count_messages(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], PARTITIONS))
        assert sum(raw.values()) >= 8
        # The timer's first commit comes TIMER_SECONDS after the worker's consumer started: anything
        # committed before `started + TIMER_SECONDS / 2` was committed early.
        deadline = started + TIMER_SECONDS / 2
        assert asyncio.run(_committed_up_to(backend.kafka_bootstrap, group, T.RAW_TOPICS["metric"], raw, deadline)), \
            f"raw offsets not committed within {TIMER_SECONDS / 2:.0f} s (log: {proc.log_path})"
        clean = asyncio.run(count_messages(backend.kafka_bootstrap, T.CLEAN_TOPICS["metric"], PARTITIONS))
        assert sum(clean.values()) >= 4
        want = {p: n for p, n in clean.items() if n > 0}
        assert asyncio.run(_committed_up_to(backend.kafka_bootstrap, group, T.CLEAN_TOPICS["metric"], want, deadline)), \
            f"clean offsets not committed within {TIMER_SECONDS / 2:.0f} s (log: {proc.log_path})"
    finally:
        proc.stop()
