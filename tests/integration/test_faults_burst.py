"""Cardinality burst: 100,000 new series from one producer in one go, through Tansu and one worker.

About 30 s on a quiet 2-core machine (the deadline is generous for a busy one). Every point is accounted
for — scored, or dead-lettered with reason "series cap" (SCORING_MAX_SERIES_PER_TENANT) — to the last point, and the worker's memory stays within the stated bound (README, "Bounded state").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen

SERIES = 100_000
CAP = 20_000
RSS_BOUND_MB = 600  # the README's stated bound for one worker at the default cap


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of this module's own: the test counts whole topics."""
    return own_backend


@pytest.fixture
def worker(backend: Backend) -> Iterator[Any]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-burst-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "SCORING_MAX_SERIES_PER_TENANT": str(CAP)}
    proc = start_kaizen(["worker"], env, "faults-burst-worker")
    try:
        yield proc
    finally:
        proc.stop()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _heartbeats(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, r in pairs if t == T.STATUS and r.get("role") == "worker"]


def _total(hb: dict[str, Any]) -> int:
    d = hb.get("detail", {})
    return int(d.get("points_scored", 0)) + int(d.get("series_cap_points", 0))


async def test_cardinality_burst_is_accounted_for_to_the_last_point_within_the_memory_bound(
        backend: Backend, worker: Any) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    now = time.time()
    # The worker is up (a heartbeat) before the burst, so its RSS before is measured at rest.
    await collect(backend.kafka_bootstrap, [T.STATUS], lambda p: bool(_heartbeats(p)), timeout=40)
    before = rss_mb(worker.pid)
    pts = [{"metric_name": "Latency", "value": float(i % 97), "timestamp": now - 60, "tenant_id": tenant,
            "namespace": "Test/Burst", "dimensions": {"service": "api", "request_id": f"r-{i}"},
            "event_id": f"{tenant}-{i}"} for i in range(SERIES)]
    started = time.monotonic()
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                  [envelope(pts[i:i + 1000]) for i in range(0, SERIES, 1000)], key=tenant.encode())
    produced_in = time.monotonic() - started

    pairs = await collect(backend.kafka_bootstrap, [T.STATUS],
                          lambda p: any(_total(h) >= SERIES for h in _heartbeats(p)), timeout=100)
    accounted_in = time.monotonic() - started
    hb = max(_heartbeats(pairs), key=_total)
    detail = hb["detail"]
    # Processing is at least once (a busy worker that misses heartbeats is rebalanced and takes some
    # messages again), so the counters may count a point twice; the distinct figures must be exact: every
    # point of the burst is a new series, so admitted series = distinct points scored.
    scored, capped = int(detail["points_scored"]), int(detail["series_cap_points"])
    assert scored + capped >= SERIES, f"scored {scored} + capped {capped} < {SERIES}: points lost"
    admitted = int(detail["series_admitted"])
    assert 0 < admitted <= CAP

    # The capped points are on the dead-letter topic, each exactly once, with the reason.
    def keep(topic: str, rec: dict[str, Any]) -> bool:
        return str(rec.get("reason", "")).startswith("series cap") and tenant in rec.get("reason", "")

    def count(pairs: list[tuple[str, dict[str, Any]]]) -> int:
        return sum(len(orjson.loads(r["original"])["records"]) for _, r in pairs)

    dead = await collect(backend.kafka_bootstrap, [T.DEADLETTER], lambda p: count(p) >= SERIES - admitted,
                         keep=keep, timeout=30, settle=1.0)
    ids = [p["event_id"] for _, r in dead for p in orjson.loads(r["original"])["records"]]
    assert admitted + len(set(ids)) == SERIES, f"admitted {admitted} + capped {len(set(ids))} != {SERIES}"
    again = len(ids) - len(set(ids))
    assert not any(r["original_truncated"] for _, r in dead)
    after = rss_mb(worker.pid)
    print(f"burst of {SERIES} series produced in {produced_in:.1f} s: scored {admitted}, series cap "
          f"{len(set(ids))} ({again} dead-lettered again after a redelivery); "
          f"accounted for after {accounted_in:.1f} s; worker RSS {before:.0f} MB -> {after:.0f} MB")
    assert after < RSS_BOUND_MB, f"worker RSS {after:.0f} MB above the stated bound {RSS_BOUND_MB} MB"
    assert worker.alive() and "Traceback" not in worker.log_path.read_text(errors="replace")
