"""Users per hour and outcomes reach the opportunities stage as records, whatever their order (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agents.opportunities import agent as opportunities_agent
from agents.opportunities.logic.inputs import users_from_point
from streams import topics as T
from streams.records import ImprovementOpportunity, OpportunityInput, TelemetryInsight
from streams.testing import AgentHarness

NOW = datetime.now(UTC)


def insight(component: str = "checkout", tenant: str = "acme") -> TelemetryInsight:
    return TelemetryInsight.model_validate({
        "insight_type": "performance_degradation", "severity": "high", "affected_component": component,
        "affected_tenants": [tenant], "tenant_id": tenant, "metrics": {"current": 140.0, "baseline": 100.0},
        "description": "latency up", "confidence_score": 0.9, "timestamp": NOW, "source": "trends",
        "metric_name": "Latency", "problem_type": "latency"})


def users(component: str, value: float, at: float, tenant: str = "acme") -> OpportunityInput:
    return OpportunityInput(kind="users", input_id=f"u|{tenant}|{component}|{at}|{value}", tenant_id=tenant,
                            component=component, users_per_hour=value, observed_at=at)


@pytest.fixture
async def harness():  # type: ignore[no-untyped-def]
    def reset() -> None:
        opportunities_agent._store.clear()
        opportunities_agent._inputs.clear()
        opportunities_agent._ctx["c"] = opportunities_agent.context

    reset()
    async with AgentHarness() as h:
        yield h
    reset()


async def feed(h: AgentHarness, seq: list[Any], partition: int) -> None:
    """Insights through the agent, inputs as the worker's follower of opportunities.inputs folds them."""
    for rec in seq:
        if isinstance(rec, OpportunityInput):
            await opportunities_agent.fold_input(rec, NOW)
        else:
            await h.feed(opportunities_agent.opportunities, [rec], partition=partition)


def latest(h: AgentHarness) -> dict[str, ImprovementOpportunity]:
    return {o.opportunity_id: o for o in h.records(T.OPPORTUNITIES, ImprovementOpportunity)}


@pytest.mark.parametrize("order", ["users first", "insight first", "users late and out of order"])
async def test_users_per_hour_is_the_latest_observation_whatever_the_order(harness: AgentHarness,
                                                                            order: str) -> None:
    u1, u2 = users("checkout", 5000.0, 100.0), users("checkout", 8000.0, 200.0)
    seq: list[Any] = {"users first": [u1, u2, insight()], "insight first": [insight(), u1, u2],
                      "users late and out of order": [u2, insight(), u1]}[order]
    await feed(harness, seq, partition=1)
    [opp] = latest(harness).values()
    assert opp.affected_users_per_hour == 8000.0, order


async def test_other_components_users_do_not_leak_and_restart_keeps_them(harness: AgentHarness) -> None:
    await feed(harness, [users("search", 9.0, 1.0), users("checkout", 300.0, 1.0), insight("checkout")], 0)
    assert next(iter(latest(harness).values())).affected_users_per_hour == 300.0
    harness.restart()  # the opportunities rebuilt from their changelog, rescored with the current context
    await feed(harness, [users("checkout", 450.0, 2.0), insight("checkout").model_copy(update={"insight_id": "x"})],
               0)
    assert next(iter(latest(harness).values())).affected_users_per_hour == 450.0


async def test_outcome_is_learned_by_other_partitions_and_counted_once(harness: AgentHarness) -> None:
    await feed(harness, [insight("checkout")], partition=2)
    [opp] = latest(harness).values()
    outcome = TelemetryInsight.model_validate({
        "insight_type": "improvement_outcome", "severity": "low", "affected_component": "checkout",
        "affected_tenants": ["acme"], "tenant_id": "acme", "description": "rolled back", "confidence_score": 1.0,
        "timestamp": NOW, "evidence": {"opportunity_id": opp.opportunity_id, "outcome": "rolled_back"}})
    await feed(harness, [outcome, outcome], partition=2)
    sent = harness.records(T.OPPORTUNITY_INPUTS, OpportunityInput)
    assert [s.kind for s in sent] == ["outcome"], "one input, the replayed outcome not sent again"
    # Another partition: a similar opportunity there is rescored with the outcome factor once it is learned.
    await feed(harness, [insight("search")], partition=3)
    other = next(o for o in latest(harness).values() if o.affected_components == ["search"])
    await feed(harness, sent * 2, partition=3)
    after = latest(harness)[other.opportunity_id]
    assert after.outcome_adjustment < other.outcome_adjustment and after.impact_score < other.impact_score
    again = after.outcome_adjustment
    await feed(harness, sent, partition=3)
    assert latest(harness)[other.opportunity_id].outcome_adjustment == again, "an input folded twice counts once"


def test_users_from_point() -> None:
    p = {"metric_name": "ActiveUsers", "value": 12.0, "dimensions": {}}
    assert users_from_point(p, "ActiveUsers", "users") == 12.0
    assert users_from_point({"metric_name": "X", "value": 1.0, "dimensions": {"users": "7"}}, "ActiveUsers",
                            "users") == 7.0
    assert users_from_point({"metric_name": "X", "value": 1.0, "dimensions": {"users": "many"}}, "ActiveUsers",
                            "users") is None


def test_fold_gives_the_same_opportunity_whatever_order_insights_arrive_in() -> None:
    from datetime import timedelta
    from itertools import permutations

    from agents.opportunities.logic.opportunities import OpportunityContext, fold_insight

    base = insight()
    ins = [base.model_copy(update={"insight_id": f"i{k}", "timestamp": NOW + timedelta(minutes=m),
                                   "metrics": {"current": cur, "baseline": 100.0}, "description": f"d{k}"})
           for k, (m, cur) in enumerate([(5, 300.0), (1, 130.0), (9, 110.0)])]
    ins.append(base.model_copy(update={"insight_id": "alarm", "timestamp": NOW + timedelta(minutes=3),
                                       "metrics": {}, "severity": "critical"}))
    results = set()
    for order in permutations(ins):
        opp = None
        for i in order:
            opp = fold_insight(opp, i, NOW, OpportunityContext())
        assert opp is not None
        results.add((opp.impact_score, opp.performance_gain_percentage, opp.description, opp.severity,
                     tuple(e.insight_id for e in opp.telemetry_evidence)))
    assert len(results) == 1, results
    assert next(iter(results))[1] == 10.0, "the gain of the latest insight by its own time"
