"""The demo workload model, the scenarios against the real playbooks, and the timeline tracker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.improvement.logic.playbooks import plan
from agents.patterns.logic.templates import categorize
from kaizen.demo.env import DEMO_ENV, apply_demo_env
from kaizen.demo.scenarios import SCENARIOS, Scenario, TimelineTracker, select
from kaizen.demo.workload.reporter import parse_value, split_parameters
from kaizen.demo.workload.service import DEFAULT_PARAMETERS, Faults, SimulatedService, evaluate
from streams import topics as t
from streams.records import ImprovementOpportunity

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PROBLEM = {"error-burst": "database_connection"}


def _fixed(s: Scenario) -> dict[str, float | bool]:
    """The parameters after the planner's playbook for the scenario's opportunity."""
    opp = ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id=s.profile.tenant_id,
                                 problem_type=PROBLEM.get(s.name, "latency"), first_seen=T0, last_seen=T0,
                                 affected_components=[s.profile.component])
    p = plan(opp, dict(DEFAULT_PARAMETERS), s.profile.component)
    assert p.changes, "the playbook must change something"
    return {**DEFAULT_PARAMETERS, **{c.parameter: c.new for c in p.changes if not isinstance(c.new, str)}}


def test_same_seed_same_ticks() -> None:
    prof = SCENARIOS["latency-regression"].profile
    a, b = SimulatedService(prof, seed=5), SimulatedService(prof, seed=5)
    ta = [a.tick(T0 + timedelta(seconds=i)) for i in range(20)]
    tb = [b.tick(T0 + timedelta(seconds=i)) for i in range(20)]
    assert ta == tb
    c = SimulatedService(prof, seed=6)
    assert [c.tick(T0 + timedelta(seconds=i)) for i in range(20)] != ta


def test_latency_regression_fault_is_fixed_by_the_latency_playbook() -> None:
    s = SCENARIOS["latency-regression"]
    healthy = evaluate(s.profile, DEFAULT_PARAMETERS, Faults())
    faulty = evaluate(s.profile, DEFAULT_PARAMETERS, s.fault)
    fixed = evaluate(s.profile, _fixed(s), s.fault)
    assert faulty.latency_ms > 2 * healthy.latency_ms
    assert fixed.latency_ms < 0.75 * faulty.latency_ms
    assert fixed.error_rate <= faulty.error_rate + 1e-9


def test_bad_change_makes_latency_worse_by_more_than_a_quarter() -> None:
    s = SCENARIOS["bad-change"]
    faulty = evaluate(s.profile, DEFAULT_PARAMETERS, s.fault)
    changed = evaluate(s.profile, _fixed(s), s.fault)
    assert changed.latency_ms > 1.25 * faulty.latency_ms
    assert changed.contention > 1.2


def test_error_burst_is_database_errors_fixed_by_a_larger_pool() -> None:
    s = SCENARIOS["error-burst"]
    faulty = evaluate(s.profile, DEFAULT_PARAMETERS, s.fault)
    fixed = evaluate(s.profile, _fixed(s), s.fault)
    assert faulty.error_rate > 0.05
    assert fixed.error_rate < 0.01
    svc = SimulatedService(s.profile, seed=s.seed)
    svc.inject(s.fault)
    errors = [ln for i in range(30) for ln in svc.tick(T0 + timedelta(seconds=i)).logs if ln.level == "ERROR"]
    assert len(errors) > 30  # well over the recurring threshold (10 per window) within half a minute
    db = [ln for ln in errors if categorize(ln.message) == "database_connection"]
    assert len(db) >= 0.9 * len(errors)  # the rest: the service's background 5xx


def test_alarm_fault_crosses_the_threshold_and_the_fix_clears_it() -> None:
    s = SCENARIOS["alarm"]
    assert s.alarm is not None and "critical" in s.alarm.name
    assert evaluate(s.profile, DEFAULT_PARAMETERS, Faults()).latency_ms < s.alarm.threshold
    assert evaluate(s.profile, DEFAULT_PARAMETERS, s.fault).latency_ms > s.alarm.threshold
    assert evaluate(s.profile, _fixed(s), s.fault).latency_ms < s.alarm.threshold


def test_canary_traffic_is_measured_on_its_own() -> None:
    s = SCENARIOS["bad-change"]
    svc = SimulatedService(s.profile, seed=1, canary_fraction=0.1)
    svc.inject(s.fault)
    assert svc.tick(T0).canary_latency_ms is None
    fixed = _fixed(s)
    svc.configure({}, {k: v for k, v in fixed.items() if v != DEFAULT_PARAMETERS[k]})
    ticks = [svc.tick(T0 + timedelta(seconds=i)) for i in range(20)]
    main = sum(x.latency_ms for x in ticks) / 20
    canary = sum(x.canary_latency_ms or 0.0 for x in ticks) / 20
    assert canary > 1.25 * main
    assert all(x.canary_share == 0.1 for x in ticks)


def test_ssm_parameters_split_into_full_and_canary() -> None:
    params = [{"Name": "/kaizen/acme/checkout/cache_size", "Value": "2048"},
              {"Name": "/kaizen/acme/checkout/canary/cache_size", "Value": "4096"},
              {"Name": "/kaizen/acme/checkout/feature_flags.circuit_breaker", "Value": "true"},
              {"Name": "/kaizen/acme/checkout/notes", "Value": "not a number"},
              {"Name": "/kaizen/acme/other/cache_size", "Value": "1"}]
    full, canary = split_parameters("/kaizen/acme/checkout", params)
    assert full == {"cache_size": 2048.0, "feature_flags.circuit_breaker": True}
    assert canary == {"cache_size": 4096.0}
    assert parse_value("false") is False and parse_value("x") is None


def test_select_scenarios() -> None:
    assert [s.name for s in select("all")] == list(SCENARIOS)
    assert select("bad-change")[0].expected_verdict == "rollback"
    with pytest.raises(ValueError, match="latency-regression"):
        select("nope")
    assert len({s.profile.tenant_id for s in SCENARIOS.values()}) == len(SCENARIOS)


def test_demo_env_only_fills_gaps() -> None:
    env = {"MONITORING_DURATION_SECONDS": "99"}
    applied = apply_demo_env(env)
    assert env["MONITORING_DURATION_SECONDS"] == "99" and "MONITORING_DURATION_SECONDS" not in applied
    assert env["CLOUDWATCH_METRICS_PERIOD"] == DEMO_ENV["CLOUDWATCH_METRICS_PERIOD"] == "1"


def _ev(iid: str, status: str, tenant: str = "globex", **data: object) -> bytes:
    return orjson.dumps({"improvement_id": iid, "status": status, "tenant_id": tenant, "data": data})


def test_timeline_tracker_folds_a_rolled_back_improvement() -> None:
    tr = TimelineTracker([SCENARIOS["bad-change"]])
    tl = tr.timelines["bad-change"]
    ins = orjson.dumps({"tenant_id": "globex", "insight_type": "anomaly", "description": "Latency up"})
    assert tr.observe(t.INSIGHTS, ins, T0) is None  # before the fault: not part of the scenario
    tl.fault_injected_at = T0
    for i in range(40):
        tl.latency.append((T0 - timedelta(seconds=10) + timedelta(seconds=i), 100.0 if i < 10 else 130.0))
    at = [T0 + timedelta(seconds=s) for s in range(0, 40, 2)]
    assert tr.observe(t.INSIGHTS, ins, at[1]) is tl
    tr.observe(t.INSIGHTS, ins, at[2])
    tr.observe(t.OPPORTUNITIES, orjson.dumps({"tenant_id": "globex", "status": "open", "priority": "high",
                                              "problem_type": "latency", "title": "x"}), at[3])
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", "pending"), at[4])
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-2", "pending"), at[4])  # another improvement: ignored
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", "validating", plan={"changes": [
        {"parameter": "pool_size", "old": 10, "new": 15}]}), at[5])
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", "awaiting_approval"), at[6])
    tr.mark_approved("bad-change", at[7], "demo-approver")
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", "monitoring", deployment={"stage": "canary"}), at[8])
    tr.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", "rolled_back", verdict="rollback", degradation=0.4), at[9])
    r = tr.report()["scenarios"]["bad-change"]
    assert r["improvement_id"] == "imp-1"
    assert r["first_anomaly_at"] == at[1].isoformat()
    assert r["opportunity_at"] == at[3].isoformat()
    assert r["approval_at"] == at[7].isoformat() and r["approval"] == "demo-approver"
    assert r["deployed_at"] == at[8].isoformat()
    assert r["verdict"] == "rollback" and r["rollback_at"] == at[9].isoformat() and r["degradation"] == 0.4
    assert r["met_expectation"] is True
    assert r["changes"] == [{"parameter": "pool_size", "old": 10, "new": 15}]
    assert r["latency_healthy_ms"] == 100.0 and r["latency_before_ms"] == 130.0
    assert r["full_deployed_at"] is None  # rolled back during the canary stage
    tr.observe_metrics(orjson.dumps({"records": [
        {"tenant_id": "globex", "metric_name": "Latency", "timestamp": T0.isoformat(), "dimensions": {}},
        {"tenant_id": "globex", "metric_name": "Latency", "timestamp": T0.isoformat(),
         "dimensions": {"variant": "canary"}},
        {"tenant_id": "other", "metric_name": "Latency", "timestamp": T0.isoformat()}]}), T0 + timedelta(seconds=4))
    assert tr.report()["scenarios"]["bad-change"]["telemetry_lag_seconds"] == {"p50": 4.0, "max": 4.0, "points": 1}
    orjson.dumps(tr.report())  # JSON-serialisable as it is
