"""The likely cause among concurrent opportunities of a tenant, and how a cycle picks with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.improvement.cycle import _candidates, _cause_of, _in_flight, target_of
from agents.opportunities.logic.impact import prioritize
from agents.opportunities.logic.opportunities import OpportunityContext, fold_insight
from agents.opportunities.logic.rootcause import (
    cause_first,
    demand_only,
    deviation,
    likely_cause,
    more_specific,
)
from streams.records import ImprovementOpportunity, TelemetryInsight

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def insight(component: str, value: float, baseline: float, *, metric: str = "Latency", problem: str = "latency",
            t: datetime = T0, tenant: str = "acme", sev: str = "high") -> TelemetryInsight:
    return TelemetryInsight(
        insight_type="anomaly", severity=sev, affected_component=component, affected_tenants=[tenant],  # type: ignore[arg-type]
        tenant_id=tenant, metrics={"value": value, "baseline": baseline}, confidence_score=0.9, timestamp=t,
        source="scoring", metric_name=metric, problem_type=problem,
        description=f"{metric} of {component} is anomalous: {value} vs baseline {baseline}")


def pool_pattern(component: str, t: datetime = T0) -> TelemetryInsight:
    return TelemetryInsight(
        insight_type="error_pattern", severity="medium", affected_component=component, affected_tenants=["acme"],
        tenant_id="acme", metrics={"count_window": 5.0, "occurrences_per_hour": 5.0}, confidence_score=0.6,
        timestamp=t, source="patterns", problem_type="error_pattern",
        description="new error pattern: database connection failed: connection pool exhausted",
        evidence={"template": "ERROR <*> database connection failed: connection pool exhausted"})


def opp(*insights: TelemetryInsight) -> ImprovementOpportunity:
    o: ImprovementOpportunity | None = None
    for i in insights:
        o = fold_insight(o, i, i.timestamp, OpportunityContext())
    assert o is not None
    return o


def test_deviation_is_the_log_ratio_of_the_latest_incident() -> None:
    assert deviation(opp(insight("recs", 30.0, 6.5))) > deviation(opp(insight("web", 42.0, 18.5)))  # type: ignore[operator]
    assert deviation(opp(pool_pattern("accounts"))) is None
    # evidence of an older incident does not count
    old = insight("recs", 300.0, 6.5, t=T0 - timedelta(hours=2))
    assert abs(deviation(opp(old, insight("recs", 13.0, 6.5))) - 0.693) < 0.01  # type: ignore[operator]


def test_a_callee_explains_its_callers_latency_and_goes_first() -> None:
    web = opp(insight("web", 42.0, 18.5, sev="critical"))  # the caller: the callee's +23.7 ms on 18.5 ms
    recs = opp(insight("recs", 30.2, 6.5))                  # the callee: the same ms on 6.5 ms
    assert likely_cause(web, [web, recs]) is recs
    assert likely_cause(recs, [web, recs]) is None
    assert [o.affected_components[0] for o in cause_first(prioritize([web, recs]))] == ["recs", "web"]
    # another tenant, another signal group or another incident explain nothing
    other = opp(insight("recs", 30.2, 6.5, tenant="globex"))
    errors = opp(insight("recs", 5.0, 0.2, metric="ErrorRate", problem="error_rate"))
    later = opp(insight("recs", 30.2, 6.5, t=T0 + timedelta(hours=1)))
    assert likely_cause(web, [web, other, errors, later]) is None
    # close deviations are no evidence either way (noise): the ranking decides
    twin = opp(insight("recs", 40.0, 18.0))
    assert likely_cause(web, [web, twin]) is None


def test_the_specific_error_evidence_of_a_component_goes_before_its_error_rate() -> None:
    rate = opp(insight("accounts", 3.0, 0.2, metric="ErrorRate", problem="error_rate", sev="critical"))
    pool = opp(pool_pattern("accounts", T0 + timedelta(seconds=2)))
    assert pool.problem_type == "database_connection"
    assert more_specific(rate, [rate, pool]) is pool
    assert [o.problem_type for o in cause_first(prioritize([rate, pool]))] == ["database_connection", "error_rate"]


def test_a_cycle_works_on_the_cause_and_one_change_per_component_at_a_time() -> None:
    web = opp(insight("web", 42.0, 18.5, sev="critical"))
    recs = opp(insight("recs", 30.2, 6.5))
    since = T0 - timedelta(hours=1)
    assert [target_of(o) for o in _candidates([web, recs], set(), "acme", since, None, None)] == \
        [("acme", "recs"), ("acme", "web")]
    # while the cause is being changed, its symptom waits; a component being changed gets nothing new
    assert _candidates([web, recs], set(), "acme", since, None, None, {("acme", "recs")}) == []
    assert _candidates([web], set(), "acme", since, None, None, {("acme", "web")}) == []
    # a focused (self-healing) cycle on the caller works on the callee, none while the callee is in flight
    assert _cause_of(web, [web, recs], set(), set(), since) is recs
    assert _cause_of(web, [web, recs], set(), {("acme", "recs")}, since) is None
    assert _cause_of(recs, [web, recs], set(), set(), since) is recs
    assert _in_flight({}, 0.0) == (set(), set())


def test_a_throughput_change_alone_is_demand_and_waits() -> None:
    fewer = opp(insight("timeline", 150.0, 200.0, metric="RequestCount", problem="throughput"))
    since = T0 - timedelta(hours=1)
    assert demand_only(fewer, [fewer])
    assert _candidates([fewer], set(), "acme", since, None, None) == []
    # the same drop while the service fails: saturation, worked on
    failing = opp(insight("timeline", 5.0, 0.2, metric="ErrorRate", problem="error_rate"))
    assert not demand_only(fewer, [fewer, failing])
    assert {o.problem_type for o in _candidates([fewer, failing], set(), "acme", since, None, None)} == \
        {"throughput", "error_rate"}


def test_a_components_deviation_is_its_signals_whatever_opportunity_holds_it() -> None:
    """The callee's error rate was worked on (resolved) and its log pattern naming the cause is open: the
    caller's error rate is still explained by the callee, whose pool opportunity goes first."""
    app = opp(insight("app", 10.7, 0.4, metric="ErrorRate", problem="error_rate", sev="critical"))
    rate = opp(insight("wallet", 10.5, 0.2, metric="ErrorRate", problem="error_rate"))
    rate = rate.model_copy(update={"status": "resolved"})
    pool = opp(pool_pattern("wallet", T0 + timedelta(seconds=3)))
    since = T0 - timedelta(hours=1)
    assert likely_cause(app, [app, rate, pool]) is pool
    assert [o.affected_components[0] for o in _candidates([app, rate, pool], set(), "acme", since, None, None)] \
        == ["wallet", "app"]
