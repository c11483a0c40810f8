"""Agents run in process through streams.testing: what they emit and what their state rebuilds to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.opportunities import agent as opportunities_agent
from streams import topics as T
from streams.records import ImprovementOpportunity, TelemetryInsight
from streams.testing import AgentHarness, MemoryStore

NOW = datetime.now(UTC)


def latency_insight(component: str = "checkout", tenant: str = "acme", current: float = 140.0) -> TelemetryInsight:
    return TelemetryInsight.model_validate({
        "insight_type": "performance_degradation", "severity": "high", "affected_component": component,
        "affected_tenants": [tenant], "tenant_id": tenant, "metrics": {"current": current, "baseline": 100.0},
        "description": "latency up", "confidence_score": 0.9, "timestamp": NOW, "source": "trends",
        "metric_name": "Latency", "problem_type": "latency"})


@pytest.fixture
async def harness():  # type: ignore[no-untyped-def]
    opportunities_agent._store.clear()  # the agent caches its store per process
    async with AgentHarness() as h:
        yield h
    opportunities_agent._store.clear()


async def test_one_opportunity_per_problem_updated_not_duplicated(harness: AgentHarness) -> None:
    first = latency_insight(current=140.0)
    again = latency_insight(current=150.0).model_copy(update={"insight_id": "", "timestamp": NOW})
    await harness.feed(opportunities_agent.opportunities, [first, first, again], partition=1)
    opps = harness.records(T.OPPORTUNITIES, ImprovementOpportunity)
    assert opps, "the agent published its opportunity"
    assert {o.opportunity_id for o in opps} == {opps[0].opportunity_id}, "one opportunity for one problem"
    assert opps[0].affected_components == ["checkout"] and opps[0].tenant_id == "acme"


async def test_state_survives_a_restart_from_its_changelog(harness: AgentHarness) -> None:
    await harness.feed(opportunities_agent.opportunities, [latency_insight()], partition=2)
    [store] = harness.stores
    assert isinstance(store, MemoryStore)
    before = dict(await store.state(2))
    assert before, "the opportunity is in the partition's state"
    harness.restart()
    assert not store.loaded(2)
    assert dict(await store.state(2)) == before, "rebuilt from the recorded deltas"
    assert store.rebuilt_deltas[2] >= 1


async def test_a_bad_insight_is_logged_and_the_next_one_processed(harness: AgentHarness) -> None:
    await harness.feed(opportunities_agent.opportunities, [b"{not json", latency_insight(component="search")])
    opps = harness.records(T.OPPORTUNITIES, ImprovementOpportunity)
    assert [o.affected_components for o in opps] == [["search"]]


async def test_sends_are_restored_after_the_harness() -> None:
    from streams import app as A

    async with AgentHarness():
        assert "send" in vars(A.opportunities_topic)
    assert "send" not in vars(A.opportunities_topic)


async def test_the_metric_path_runs_in_process_and_its_dedup_deltas_are_changelogged() -> None:
    """The one-hop stage through the harness (its telemetry topics captured too, each send a delivered
    future): a raw envelope of owned series goes to the clean topic once, a second delivery of it is a
    duplicate, and the dedup delta written in the background lands in the store's changelog."""
    import time

    from agents.ingest.agent import background_writes_done
    from agents.scoring import fused
    from benchmarks.common import keyed_envelopes, metric_points

    fused._stores.clear()
    try:
        async with AgentHarness(partitions=4) as h:
            st = await fused.stores()
            raw = keyed_envelopes(metric_points(40, 10, tenant="harness"), 40)[2][0]
            now = time.time()
            await fused.process(st, raw, None, 2, 0, now)
            await fused.process(st, raw, None, 2, 1, now)  # redelivered: every point a duplicate
            await background_writes_done()
            clean = h.values(T.CLEAN_TOPICS["metric"])
            assert len(clean) == 1, "one clean envelope for the first delivery, none for the duplicate"
            dedup = next(s for s in h.stores if s.name == "dedup.metric")
            assert len(dedup.changelog[2]) == 1, "the first delivery's dedup delta is changelogged"
            assert h.values(T.SERIES), "series summaries published"
    finally:
        fused._stores.clear()
