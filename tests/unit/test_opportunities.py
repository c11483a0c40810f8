"""Insights folded into one opportunity per problem: formula inputs, decay, outcomes, efficiency rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.opportunities.logic.impact import impact_score, prioritize
from agents.opportunities.logic.opportunities import (
    OpportunityContext,
    apply_outcome,
    cache_insight,
    decay,
    fold_insight,
    gain_from_insight,
    opportunity_id,
    outcome_factor,
    per_request_insight,
    problem_family,
    record_outcome,
    repeated_calls_insights,
)
from streams.metric_codec import lean_from_model
from streams.records import ImprovementOpportunity, MetricDataPoint, TelemetryInsight

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def latency(t: datetime, cur: float = 140.0, base: float = 100.0, tenant: str = "acme", sev: str = "high",
            conf: float = 0.9, tenants: list[str] | None = None) -> TelemetryInsight:
    return TelemetryInsight.model_validate({
        "insight_type": "performance_degradation", "severity": sev, "affected_component": "checkout",
        "affected_tenants": tenants or [tenant], "tenant_id": tenant, "metrics": {"current": cur, "baseline": base},
        "description": "latency up", "confidence_score": conf, "timestamp": t, "source": "trends",
        "metric_name": "Latency", "problem_type": "latency"})


def timeout_pattern(t: datetime, per_hour: float = 12.0) -> TelemetryInsight:
    return TelemetryInsight(
        insight_type="error_pattern", severity="medium", affected_component="checkout", affected_tenants=["acme"],
        tenant_id="acme", metrics={"count": per_hour, "occurrences_per_hour": per_hour},
        description="recurring: Request to <*> timed out after <*> ms", confidence_score=0.8, timestamp=t,
        source="patterns", problem_type="error_pattern", evidence={"template": "Request to <*> timed out"})


def ctx(**kw: object) -> OpportunityContext:
    c = OpportunityContext(**kw)  # type: ignore[arg-type]
    c.observe(lean_from_model(MetricDataPoint(metric_name="ActiveUsers", value=1000, timestamp=T0,
                                              tenant_id="acme", dimensions={"service": "checkout"})))
    return c


def test_opportunity_id_is_deterministic() -> None:
    assert opportunity_id("acme", "checkout", "latency") == opportunity_id("acme", "checkout", "latency")
    assert opportunity_id("acme", "checkout", "latency") != opportunity_id("acme", "checkout", "error_rate")


def test_new_opportunity_formula_inputs_from_telemetry() -> None:
    c = ctx()
    opp = fold_insight(None, latency(T0), T0, c)
    assert opp.opportunity_id == opportunity_id("acme", "checkout", "latency")
    assert opp.performance_gain_percentage == pytest.approx(40.0)  # +40 % over baseline
    assert opp.affected_users_per_hour == 1000 and opp.frequency_per_day == 1.0 and opp.occurrences == 1
    assert opp.proposed_changes["kind"] == "timeout" and opp.risk_level == "low" and not opp.requires_approval
    want = impact_score(40, 1000, 1, "high", 0.9, "low")
    assert opp.impact_score == pytest.approx(want) and opp.priority == "medium"


def test_latency_anomaly_and_timeout_errors_fold_into_one_opportunity() -> None:
    c = ctx()
    assert problem_family(timeout_pattern(T0)) == problem_family(latency(T0)) == "latency"
    opp: ImprovementOpportunity | None = None
    for h in range(24):
        t = T0 + timedelta(hours=h)
        ins = latency(t) if h % 2 == 0 else timeout_pattern(t)
        assert opp is None or opportunity_id(ins.tenant_id, ins.affected_component, problem_family(ins)) == \
            opp.opportunity_id
        opp = fold_insight(opp, ins, t, c)
    assert opp is not None
    assert opp.occurrences == 24 and len(opp.telemetry_evidence) == 20  # bounded, latest kept
    assert opp.telemetry_evidence[-1].timestamp == T0 + timedelta(hours=23)
    assert opp.frequency_per_day == pytest.approx(12 * 24)  # the pattern's 12/hour beats 24 over 23 h
    assert opp.first_seen == T0 and opp.last_seen == T0 + timedelta(hours=23)
    # replaying an insight already in the evidence changes nothing
    assert fold_insight(opp, opp.telemetry_evidence[-1], T0, c) == opp


def anomaly(t: datetime, value: float = 300.0, base: float = 100.0, score: float = 0.99) -> TelemetryInsight:
    """A detector anomaly of the checkout latency series (as agents/scoring builds it)."""
    return TelemetryInsight(
        insight_type="anomaly", severity="critical", affected_component="checkout", affected_tenants=["acme"],
        tenant_id="acme", source="scoring", metric_name="RequestLatency", problem_type="latency",
        confidence_score=score, metrics={"value": value, "baseline": base, "anomaly_score": score},
        description="RequestLatency of checkout is anomalous", timestamp=t,
        evidence={"series": "acme|Test|RequestLatency|service=checkout", "threshold": 0.9})


def test_the_same_insight_twice_counts_once() -> None:
    c = ctx()
    first = fold_insight(None, anomaly(T0), T0, c)
    # the same insight again (re-delivered, or re-emitted by a stage after a partition move): same id
    again = anomaly(T0)
    assert again.insight_id == first.telemetry_evidence[0].insight_id
    assert fold_insight(first, again, T0, c) == first
    # another finding of the same incident, by a scoring stage whose state was restored on a new owner
    # (a trend 9 minutes after the anomaly of the same step): one occurrence
    later = anomaly(T0 + timedelta(minutes=1), base=187.5, score=0.95)
    trend = anomaly(T0 + timedelta(minutes=9), base=187.5).model_copy(
        update={"insight_type": "performance_degradation", "insight_id": "", "source": "trends"})
    trend = TelemetryInsight.model_validate(trend.model_dump())
    assert len({later.insight_id, trend.insight_id, again.insight_id}) == 3
    assert fold_insight(first, later, T0, c) == first
    assert fold_insight(first, trend, T0, c) == first
    assert first.occurrences == 1 and first.frequency_per_day == 1.0


def test_seen_insights_are_remembered_beyond_the_evidence_kept() -> None:
    c = ctx(evidence_limit=2)
    opp = None
    for h in range(4):
        opp = fold_insight(opp, latency(T0 + timedelta(hours=h)), T0, c)
    assert opp is not None and opp.occurrences == 4 and len(opp.telemetry_evidence) == 2
    # the first insight left the evidence but is still known: a replay of it counts nothing
    assert fold_insight(opp, latency(T0), T0, c) == opp
    assert len(opp.proposed_changes["seen_insights"]) == 4  # type: ignore[arg-type]
    # a later incident of the same series counts again
    assert fold_insight(opp, latency(T0 + timedelta(hours=5)), T0, c).occurrences == 5


def test_anomalies_of_a_series_far_apart_are_separate_occurrences() -> None:
    c = ctx()
    opp = fold_insight(None, anomaly(T0), T0, c)
    opp = fold_insight(opp, anomaly(T0 + timedelta(seconds=c.incident_seconds + 60)), T0, c)
    assert opp.occurrences == 2


def test_frequency_extrapolated_from_observations() -> None:
    c = ctx()
    opp = None
    for h in range(7):
        opp = fold_insight(opp, latency(T0 + timedelta(hours=4 * h)), T0, c)
    assert opp is not None and opp.frequency_per_day == pytest.approx(7 / 1.0)  # 7 in 24 h


def test_users_fallbacks() -> None:
    c = OpportunityContext(default_users_per_hour=50)
    assert fold_insight(None, latency(T0), T0, c).affected_users_per_hour == 50
    ins = latency(T0)
    ins.metrics["requests_per_hour"] = 700
    assert fold_insight(None, ins, T0, c).affected_users_per_hour == 700
    c.observe(lean_from_model(MetricDataPoint(metric_name="Invocations", value=1, timestamp=T0, tenant_id="acme",
                                              dimensions={"service": "search", "users": "300"})))
    assert fold_insight(None, latency(T0), T0, c).affected_users_per_hour == 300  # tenant-wide ("*")


def test_system_wide_requires_approval_and_raises_risk() -> None:
    c = ctx()
    opp = fold_insight(None, latency(T0, tenants=["acme", "globex"]), T0, c)
    assert opp.scope == "system" and opp.requires_approval and opp.risk_level == "medium"
    sys_opp = fold_insight(None, latency(T0, tenant="system"), T0, c)
    assert sys_opp.requires_approval and sys_opp.scope == "system"


def test_gain_variants() -> None:
    base = latency(T0)
    assert gain_from_insight(base.model_copy(update={"metrics": {"current": 900, "baseline": 100}}),
                             "latency") == 100.0
    thr = base.model_copy(update={"metrics": {"current": 70, "baseline": 100}})
    assert gain_from_insight(thr, "throughput") == pytest.approx(30.0)
    err = base.model_copy(update={"metrics": {"current": 0.06, "baseline": 0.01}})
    assert gain_from_insight(err, "error_rate") == pytest.approx(5.0)
    assert gain_from_insight(base.model_copy(update={"metrics": {}, "severity": "critical"}), "x") == 50.0


def test_decay_lowers_then_closes() -> None:
    c = ctx(decay_hours=6.0)
    opp = fold_insight(None, latency(T0), T0, c)
    assert decay(opp, T0 + timedelta(minutes=30), c).impact_score == pytest.approx(opp.impact_score)
    half = decay(opp, T0 + timedelta(hours=3), c)
    assert half.impact_score == pytest.approx(opp.impact_score / 2) and half.status == "open"
    assert decay(half, T0 + timedelta(hours=3), c) == half  # not compounding
    closed = decay(opp, T0 + timedelta(hours=6), c)
    assert closed.status == "closed" and closed.impact_score == 0
    reopened = fold_insight(closed, latency(T0 + timedelta(hours=7)), T0, c)
    assert reopened.status == "open" and reopened.impact_score > 0


def test_outcomes_adjust_this_and_similar_opportunities() -> None:
    c = ctx()
    opp = fold_insight(None, latency(T0), T0, c)
    rolled = apply_outcome(opp, "rolled_back")
    assert rolled.impact_score == pytest.approx(opp.impact_score * 0.5) and rolled.status == "open"
    again = fold_insight(rolled, latency(T0 + timedelta(hours=1)), T0, c)
    assert again.outcome_adjustment == pytest.approx(0.5)  # the penalty survives new evidence
    assert apply_outcome(opp, "kept").status == "resolved"
    assert apply_outcome(opp, "failed").outcome_adjustment == pytest.approx(0.7)
    stats = record_outcome({}, opp, "kept")
    stats = record_outcome(stats, opp, "kept")
    assert outcome_factor(stats, "latency", "timeout") == pytest.approx(0.5 + 3 / 4)
    assert outcome_factor({}, "latency", "timeout") == 1.0
    good = fold_insight(None, latency(T0, tenant="globex"), T0, OpportunityContext(outcomes=stats))
    bad_stats = record_outcome(record_outcome({}, opp, "rolled_back"), opp, "failed")
    bad = fold_insight(None, latency(T0, tenant="globex"), T0, OpportunityContext(outcomes=bad_stats))
    assert good.impact_score > bad.impact_score
    assert [o.tenant_id for o in prioritize([bad, good])] == ["globex", "globex"] and prioritize([bad, good])[0] is good


def test_cache_rule() -> None:
    ins = cache_insight(30, 70, 500, component="api", tenant_id="acme", now=T0)
    assert ins is not None and ins.problem_type == "cache" and ins.metrics["cache_hit_rate"] == pytest.approx(0.3)
    assert cache_insight(60, 40, 500, component="api", tenant_id="acme", now=T0) is None
    assert cache_insight(30, 70, 100, component="api", tenant_id="acme", now=T0) is None
    opp = fold_insight(None, ins, T0, OpportunityContext())
    assert opp.problem_type == "cache" and opp.change_type == "caching"
    assert opp.performance_gain_percentage == pytest.approx(35.0) and opp.frequency_per_day == 24


def test_n_plus_one_and_redundant_calls() -> None:
    n1 = per_request_insight("DbQueriesPerRequest", 42, 3, component="orders", tenant_id="acme", now=T0)
    assert n1 is not None and n1.problem_type == "n_plus_one" and n1.severity == "high"
    assert per_request_insight("DbQueriesPerRequest", 5, 3, component="o", tenant_id="a", now=T0) is None
    red = per_request_insight("ApiCallsPerRequest", 12, 2, component="o", tenant_id="a", now=T0)
    assert red is not None and red.problem_type == "redundant_calls"
    calls = [("r1", "SELECT * FROM items WHERE id = <*>")] * 15 + [("r1", "GET /users/<*>")] * 11
    calls += [("r2", "GET /users/<*>")] * 3
    found = {i.problem_type: i for i in repeated_calls_insights(calls, component="o", tenant_id="a", now=T0)}
    assert set(found) == {"n_plus_one", "redundant_calls"} and found["n_plus_one"].metrics["current"] == 15
