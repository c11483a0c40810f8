"""The demo's scenarios as lab cases: against the lab's model and the real playbooks; the demo's outcome of a
scenario folded by the lab's runner from the loop's events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from agents.improvement.logic.playbooks import plan
from agents.patterns.logic.templates import categorize
from kaizen.demo.cli import SCENARIOS, outcome, paced, select
from kaizen.demo.env import DEMO_ENV, apply_demo_env
from kaizen.demo.workload.reporter import parse_value, split_parameters
from kaizen.lab.model import Outcome
from kaizen.lab.runner import Lab, LabTiming
from kaizen.lab.schema import Case, CaseError, demo_dir, library_dir, load_cases, parse_case
from kaizen.lab.sim import CaseSim
from streams import topics as t
from streams.records import ImprovementOpportunity
from streams.settings import Settings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _case(name: str) -> Case:
    return next(c for c in load_cases([demo_dir()]) if c.name == name)


def _at(case: Case, knobs: dict[str, float | bool] | None, faulted: bool) -> Outcome:
    """The oracle component's noise-free outcome, healthy or faulted, with knobs changed (None: as shipped)."""
    comp = case.oracle.component
    assert comp is not None
    t_ = case.onset + 30 if faulted else case.onset - 5
    return CaseSim(case).outcomes(t_, {comp: knobs or {}})[comp][0]


def _fixed(case: Case) -> dict[str, float | bool]:
    """The knobs after the planner's playbook for the case's opportunity (its focus, else latency)."""
    comp = case.oracle.component
    assert comp is not None
    opp = ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id=case.tenant_id,
                                 problem_type=case.operator.focus or "latency", first_seen=T0, last_seen=T0,
                                 affected_components=[comp])
    knobs = dict(case.service(comp).knobs)
    p = plan(opp, knobs, comp)
    assert p.changes, "the playbook must change something"
    return {**knobs, **{c.parameter: c.new for c in p.changes if not isinstance(c.new, str)}}


def test_the_demo_scenarios_are_cases_of_their_own() -> None:
    assert [c.name for c in select("all")] == list(SCENARIOS)
    assert select("bad-change")[0].expect is not None and select("bad-change")[0].expect.verdict == "rollback"
    assert {c.name: c.expect.verdict for c in select("all") if c.expect} == {
        "latency-regression": "keep", "bad-change": "rollback", "error-burst": "keep", "alarm": "keep"}
    with pytest.raises(ValueError, match="latency-regression"):
        select("nope")
    assert len({c.tenant_id for c in select("all")}) == 4
    # not part of the library `kaizen lab run` scores by default
    assert not {c.name for c in load_cases([library_dir()])} & set(SCENARIOS)


def test_pacing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _case("alarm")
    assert (c.onset, c.observe_seconds) == (45, 375)
    p = paced(c, 30.0, 300.0)
    assert (p.onset, p.observe_seconds, p.operator.trigger) == (30.0, 270.0, "alarm")
    monkeypatch.setenv("KAIZEN_DEMO_WARMUP_SECONDS", "25")
    assert select("alarm")[0].onset == 25.0


def test_latency_regression_is_fixed_by_the_latency_playbook() -> None:
    c = _case("latency-regression")
    healthy, faulty, fixed = _at(c, None, False), _at(c, None, True), _at(c, _fixed(c), True)
    assert faulty.latency_ms > 2 * healthy.latency_ms
    assert fixed.latency_ms < 0.75 * faulty.latency_ms
    assert fixed.error_rate <= faulty.error_rate + 1e-9


def test_bad_change_makes_latency_worse_by_more_than_a_quarter() -> None:
    """The change that hurts comes from the case itself: search runs at its contention point and exposes
    pool_size and concurrency, which the latency playbook widens."""
    c = _case("bad-change")
    changed = _fixed(c)
    assert changed["pool_size"] > 10 or changed["concurrency"] > 8
    assert _at(c, changed, True).latency_ms > 1.25 * _at(c, None, True).latency_ms


def test_error_burst_is_database_errors_fixed_by_a_larger_pool() -> None:
    c = _case("error-burst")
    faulty, fixed = _at(c, None, True), _at(c, _fixed(c), True)
    assert faulty.error_rate > 0.05
    assert fixed.error_rate < 0.01
    sim = CaseSim(c)
    ticks = [sim.tick(T0 + timedelta(seconds=i), c.onset + 10 + i)["billing"][0] for i in range(30)]
    errors = [ln for tk in ticks for ln in tk.logs if ln.level == "ERROR"]
    assert len(errors) > 30  # well over the recurring threshold (10 per window) within half a minute
    assert sum(categorize(ln.message) == "database_connection" for ln in errors) >= 0.9 * len(errors)


def test_alarm_fault_crosses_the_threshold_and_the_fix_clears_it() -> None:
    c = _case("alarm")
    alarm = c.service("payments").alarms[0]
    assert alarm.critical and "critical" in alarm.name and c.operator.trigger == "alarm"
    assert _at(c, None, False).latency_ms < alarm.threshold < _at(c, None, True).latency_ms
    assert _at(c, _fixed(c), True).latency_ms < alarm.threshold


def test_operator_and_expect_are_validated() -> None:
    base = {"name": "x", "services": [{"name": "a", "knobs": {"pool_size": 10}}],
            "fault": {"kind": "backend_slowdown", "service": "a", "factor": 2},
            "oracle": {"fault": True, "component": "a", "metric": "latency"}}
    assert parse_case({**base, "expect": {"verdict": "rollback"}, "operator": {"focus": "latency"}}).operator.focus
    for extra, field in (({"operator": {"trigger": "alarm"}}, "operator.trigger: alarm needs a critical alarm"),
                         ({"expect": {"verdict": "keep"}}, "expect.verdict: keep needs a fault a knob fixes"),
                         ({"operator": {"trigger": "later"}}, "operator.trigger"),
                         ({"expect": {"verdict": "rollback", "when": 3}}, "expect.when")):
        with pytest.raises(CaseError, match=field.replace(".", r"\.")):
            parse_case({**base, **extra}, "x.yaml")
    control = {"name": "c", "services": [{"name": "a"}], "oracle": {"fault": False}}
    with pytest.raises(CaseError, match="operator.focus: needs the oracle's component"):
        parse_case({**control, "operator": {"focus": "latency"}})


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


def test_demo_env_only_fills_gaps() -> None:
    env = {"MONITORING_DURATION_SECONDS": "99"}
    applied = apply_demo_env(env)
    assert env["MONITORING_DURATION_SECONDS"] == "99" and "MONITORING_DURATION_SECONDS" not in applied
    assert env["CLOUDWATCH_METRICS_PERIOD"] == DEMO_ENV["CLOUDWATCH_METRICS_PERIOD"] == "1"
    # the connectors read the namespaces the demo's services report to (one per service, as in the lab)
    assert env["CLOUDWATCH_NAMESPACE"] == "billing,checkout,payments,search"
    assert apply_demo_env({"CLOUDWATCH_NAMESPACE": "Mine"}).get("CLOUDWATCH_NAMESPACE") is None


def _ev(iid: str, status: str, **data: object) -> bytes:
    return orjson.dumps({"improvement_id": iid, "status": status, "tenant_id": "globex", "data": data})


async def test_the_runner_folds_a_rolled_back_improvement_into_the_demo_outcome() -> None:
    case = _case("bad-change")
    lab = Lab(Settings(aws_region="us-east-1"), [case], lambda _m: None, LabTiming(stop_after_verdict=10.0))
    lc = lab.cases["bad-change"]
    loop = asyncio.get_running_loop()

    def at(rel: float) -> None:  # the lab's clock: `rel` seconds after the onset
        lab.t0 = loop.time() - case.onset - rel

    for i in range(-20, 40):
        lc.record.series.setdefault("search", []).append((float(i), 100.0 if i < 0 else 130.0, 0.2, 150.0))
    at(-5)
    lab.observe(t.INSIGHTS, orjson.dumps({"tenant_id": "globex", "insight_type": "anomaly",
                                          "affected_component": "search", "description": "Latency up"}))
    assert lc.first_insight == ""  # before the onset: not the scenario's first insight
    at(2)
    lab.observe(t.INSIGHTS, orjson.dumps({"tenant_id": "globex", "insight_type": "anomaly",
                                          "affected_component": "search", "description": "Latency up"}))
    for rel, status, data in ((10, "pending", {"opportunity": {"affected_components": ["search"],
                                                               "problem_type": "latency"}}),
                              (11, "validating", {"plan": {"changes": [
                                  {"parameter": "pool_size", "old": 10, "new": 15}]}}),
                              (14, "monitoring", {"deployment": {"stage": "canary"},
                                                  "baseline": {"samples": 20.0}}),
                              (30, "rolled_back", {"verdict": "rollback", "degradation": 0.4})):
        at(rel)
        lab.observe(t.IMPROVEMENT_EVENTS, _ev("imp-1", status, **data))
    assert lc.verdict() is not None and lab._finished(lc)
    o = outcome(lab, lc)
    assert (o["improvement_id"], o["verdict"], o["expected_verdict"], o["met_expectation"]) == (
        "imp-1", "rollback", "rollback", True)
    assert o["approval"] == "automatic (guardrails)" and o["degradation"] == 0.4 and o["full_deployed_at"] is None
    assert o["changes"] == [{"parameter": "pool_size", "old": 10, "new": 15}]
    assert o["fault_injected_at"] < o["first_anomaly_at"] < o["deployed_at"] < o["rollback_at"] == o["verdict_at"]
    assert (o["latency_healthy_ms"], o["latency_before_ms"]) == (100.0, 130.0)
    assert o["score"]["detected"] is True and o["score"]["rollbacks"] == 1
    lab.observe_lag(orjson.dumps({"records": [
        {"tenant_id": "globex", "metric_name": "Latency", "timestamp": T0.isoformat(), "dimensions": {}},
        {"tenant_id": "globex", "metric_name": "Latency", "timestamp": T0.isoformat(),
         "dimensions": {"variant": "canary"}},
        {"tenant_id": "other", "metric_name": "Latency", "timestamp": T0.isoformat()},
        {"tenant_id": "globex", "metric_name": "Latency", "timestamp": T0.timestamp() + 1.5}]}),  # a lean point
        int((T0 + timedelta(seconds=4)).timestamp() * 1000))
    assert outcome(lab, lc)["telemetry_lag_seconds"] == {"p50": 4.0, "max": 4.0, "points": 2}
    orjson.dumps(outcome(lab, lc))  # JSON-serialisable as it is
