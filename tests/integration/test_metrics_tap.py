"""The metrics tap reads a newly watched component's recent samples back from the topic (real broker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from agents.improvement.metrics_tap import MetricsTap
from streams import topics as T
from streams.codec import encode_lean
from streams.metric_codec import lean_metric
from streams.records import ImprovementOpportunity
from streams.state import ensure_topic
from streams.views import StateViews
from tests.conftest import Backend

TOPIC = T.CLEAN_TOPICS["metric"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _watch(views: StateViews, tenant: str, component: str) -> None:
    """An open opportunity of `component` arrives in the views (fed by hand: not started)."""
    opp = ImprovementOpportunity.model_validate(dict(
        opportunity_id=f"opp-{tenant}-{component}", title=component, description="slow", tenant_id=tenant,
        status="open", problem_type="latency", affected_components=[component], first_seen=NOW, last_seen=NOW))
    views._on(T.OPPORTUNITIES, opp.opportunity_id.encode(), opp.to_bytes())


async def _send(bootstrap: str, tenant: str, component: str, values: list[float], age_s: float = 0.0) -> None:
    """One clean message per value (event time now - age), produced `age_s` ago by the broker's clock."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, v in enumerate(values):
            p = lean_metric({"metric_name": "Latency", "value": v, "timestamp": int(time.time() - age_s) + i,
                             "tenant_id": tenant, "namespace": "Shop", "dimensions": {"service": component}})
            await producer.send_and_wait(TOPIC, encode_lean([p]), partition=i % 2,
                                         timestamp_ms=int((time.time() - age_s) * 1000))
    finally:
        await producer.stop()


async def _values(tap: MetricsTap, tenant: str, component: str, want: int, timeout: float = 20.0) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await tap.settled()
        got = sorted(s.value for s in tap.window(tenant, component, 0))
        if len(got) >= want:
            await asyncio.sleep(0.5)  # anything more (a duplicate) would show now
            return sorted(s.value for s in tap.window(tenant, component, 0))
        await asyncio.sleep(0.2)
    return sorted(s.value for s in tap.window(tenant, component, 0))


async def test_a_newly_watched_component_gets_its_recent_samples_back_each_once(backend: Backend) -> None:
    bootstrap, tenant = backend.kafka_bootstrap, f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, TOPIC, 2)
    await _send(bootstrap, tenant, "checkout", [1.0, 2.0], age_s=3600)  # before the lookback: stays out
    await _send(bootstrap, tenant, "checkout", [10.0, 11.0, 12.0, 13.0])
    await _send(bootstrap, tenant, "search", [99.0])  # never watched
    views = StateViews(bootstrap)
    tap = MetricsTap(bootstrap, watch=views, lookback_seconds=600)
    await tap.start()
    try:
        assert tap.window(tenant, "checkout", 0) == []  # not watched yet: nothing kept
        _watch(views, tenant, "checkout")
        await asyncio.sleep(0.6)  # the watch list is refreshed at most twice a second, on the next record
        await _send(bootstrap, tenant, "checkout", [20.0, 21.0])  # live, after the watch began
        assert await _values(tap, tenant, "checkout", 6) == [10.0, 11.0, 12.0, 13.0, 20.0, 21.0]
        assert tap.window(tenant, "search", 0) == []
        assert tap.read_back_samples >= 4
    finally:
        await tap.stop()


async def test_a_restarted_tap_regains_the_samples_of_what_it_watches(backend: Backend) -> None:
    bootstrap, tenant = backend.kafka_bootstrap, f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, TOPIC, 2)
    await _send(bootstrap, tenant, "cart", [5.0, 6.0, 7.0])
    views = StateViews(bootstrap)
    _watch(views, tenant, "cart")  # watched before the tap starts, as after a worker restart
    tap = MetricsTap(bootstrap, watch=views, lookback_seconds=600)
    await tap.start()
    try:
        assert await _values(tap, tenant, "cart", 3) == [5.0, 6.0, 7.0]
    finally:
        await tap.stop()
    without = MetricsTap(bootstrap, watch=views)  # no lookback: only what arrives from now on
    await without.start()
    try:
        await without.settled()
        assert without.window(tenant, "cart", 0) == []
    finally:
        await without.stop()


async def test_components_watched_one_after_another_share_one_pass_over_the_topic(backend: Backend) -> None:
    bootstrap, tenant = backend.kafka_bootstrap, f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, TOPIC, 2)
    for i, component in enumerate(("a", "b", "c")):
        await _send(bootstrap, tenant, component, [float(i), float(i) + 0.5])
    views = StateViews(bootstrap)
    tap = MetricsTap(bootstrap, watch=views, lookback_seconds=600)
    await tap.start()
    try:
        for component in ("a", "b", "c"):  # three opportunities open, the watch list refreshed after each
            _watch(views, tenant, component)
            tap._refresh_watch(force=True)
        await tap.settled()
        assert tap.read_back_passes == 1
        assert [sorted(s.value for s in tap.window(tenant, c, 0)) for c in ("a", "b", "c")] == \
            [[0.0, 0.5], [1.0, 1.5], [2.0, 2.5]]
    finally:
        await tap.stop()


async def test_a_quiet_topic_still_gets_a_newly_watched_component_read_back(backend: Backend) -> None:
    bootstrap, tenant = backend.kafka_bootstrap, f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, TOPIC, 2)
    await _send(bootstrap, tenant, "inventory", [3.0, 4.0])
    views = StateViews(bootstrap)
    tap = MetricsTap(bootstrap, watch=views, lookback_seconds=600)
    await tap.start()
    try:
        _watch(views, tenant, "inventory")  # and no record arrives after this
        assert await _values(tap, tenant, "inventory", 2, timeout=20.0) == [3.0, 4.0]
    finally:
        await tap.stop()


async def test_with_nothing_watched_the_tap_fetches_nothing_and_loses_nothing_when_watching_starts(
        backend: Backend) -> None:
    """A worker's tap tails the whole clean topic only while a component is watched; what arrived while it
    was paused comes back through the read-back (within the lookback), live records after it, each once."""
    bootstrap, tenant = backend.kafka_bootstrap, f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, TOPIC, 2)
    views = StateViews(bootstrap)
    tap = MetricsTap(bootstrap, watch=views, lookback_seconds=600)
    await tap.start()
    try:
        assert tap.tail.paused  # nothing watched: the clean topic is not fetched
        await _send(bootstrap, tenant, "payments", [1.0, 2.0, 3.0])  # while paused
        await asyncio.sleep(0.5)
        assert tap.tail.paused and tap.window(tenant, "payments", 0) == []
        _watch(views, tenant, "payments")
        tap._refresh_watch(force=True)  # (else at its next poll)
        assert tap.reading(tenant, "payments")  # its window is not there yet: monitoring waits for it
        await tap.settled()   # the tail went back to the end; the three records before it were read back
        assert not tap.tail.paused and not tap.reading(tenant, "payments")
        await _send(bootstrap, tenant, "payments", [4.0, 5.0])  # live
        assert await _values(tap, tenant, "payments", 5) == [1.0, 2.0, 3.0, 4.0, 5.0]
        views.opportunities.clear()  # the opportunity closed: nothing watched again
        views.version += 1
        tap._refresh_watch(force=True)
        assert tap.tail.paused and tap.window(tenant, "payments", 0) == []
    finally:
        await tap.stop()
