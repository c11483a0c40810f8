"""What the planner reads from telemetry (the fault lab relies on it): exposed knobs only, saturation errors
as a capacity problem, steps sized by the measured deviation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agents.improvement.logic.playbooks import extra_steps, plan, problem_key
from streams.records import ImprovementOpportunity, TelemetryInsight

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _opp(ptype: str, evidence: list[str] = (), **kw: Any) -> ImprovementOpportunity:  # type: ignore[assignment]
    insights = [TelemetryInsight(insight_type="error_pattern", severity="high", affected_component="api",
                                 affected_tenants=["t"], tenant_id="t", description=text, timestamp=T0,
                                 confidence_score=0.9, recommended_action="", metrics={}) for text in evidence]
    return ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id="t",
                                  problem_type=ptype, affected_components=["api"], first_seen=T0, last_seen=T0,
                                  telemetry_evidence=insights, **kw)


def test_only_the_knobs_the_service_exposes_are_changed() -> None:
    p = plan(_opp("latency"), {"concurrency": 8.0, "pool_size": 10.0})
    assert {c.parameter for c in p.changes} == {"concurrency", "pool_size"}
    nothing = plan(_opp("error_rate"), {"concurrency": 8.0})  # retries and breaker are not exposed
    assert nothing.changes == []
    legacy = plan(_opp("error_rate"), {})  # a service that exposes nothing kaizen can read: the playbook as is
    assert {c.parameter for c in legacy.changes} == {"max_retries", "feature_flags.circuit_breaker"}


def test_saturation_errors_are_a_throughput_problem() -> None:
    full = _opp("error_rate", ["recurring error pattern: ERROR api request rejected: all <*> workers busy, "
                               "queue full"])
    assert problem_key(full) == "throughput"
    p = plan(full, {"concurrency": 8.0, "max_retries": 2.0})
    assert [(c.parameter, c.new) for c in p.changes] == [("concurrency", 12.0)]
    transient = _opp("error_rate", ["new error pattern: ERROR api upstream answered 503 after retries"])
    assert problem_key(transient) == "error_rate"
    assert [(c.parameter, c.new) for c in plan(transient, {"max_retries": 1.0}).changes] == [("max_retries", 2.0)]


def test_steps_grow_with_the_measured_deviation() -> None:
    assert [extra_steps(_opp("latency", performance_gain_percentage=g)) for g in (0, 30, 50, 99, 100)] == \
        [0, 0, 1, 1, 2]
    small = plan(_opp("latency", performance_gain_percentage=20), {"cache_size": 1024.0})
    big = plan(_opp("latency", performance_gain_percentage=100), {"cache_size": 1024.0})
    assert small.changes[0].new == 2048.0 and big.changes[0].new == 8192.0
    capped = plan(_opp("error_rate", performance_gain_percentage=100), {"max_retries": 4.0})
    assert capped.changes[0].new == 5.0  # never past the bound


def test_steps_read_the_evidence_deviation() -> None:
    evidence = [TelemetryInsight(insight_type="anomaly", severity="high", affected_component="api",
                                 affected_tenants=["t"], tenant_id="t", description="ErrorRate anomalous",
                                 timestamp=T0, confidence_score=0.9, recommended_action="",
                                 metrics={"value": 8.1, "baseline": 0.2})]
    opp = ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id="t",
                                 problem_type="error_rate", affected_components=["api"], first_seen=T0,
                                 last_seen=T0, telemetry_evidence=evidence, performance_gain_percentage=15)
    assert extra_steps(opp) == 2
    assert [(c.parameter, c.new) for c in plan(opp, {"max_retries": 0.0}).changes] == [("max_retries", 3.0)]
