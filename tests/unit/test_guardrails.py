"""Guardrails: auto-approval only inside bounds with the flag on; approvers never approve their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.improvement.logic.guardrails import AutonomyGuardrails, decide, should_revert
from agents.improvement.logic.playbooks import ParameterChange, Plan

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
ON = {"enable_autonomous_improvements": True}
HEALTHY = {"success_rate": 0.99, "baseline_success_rate": 0.99, "cost": 1.0, "baseline_cost": 1.0,
           "latency_p95": 100.0, "baseline_latency_p95": 100.0, "consecutive_failures": 0}


def _plan(**kw: object) -> Plan:
    base: dict[str, object] = dict(tenant_id="acme", component="api", playbook="latency",
                                   changes=[ParameterChange("cache_size", 1024, 2048, (16, 1_048_576))],
                                   rationale="r", expected_gain_pct=20, risk="low")
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


def test_seed_defaults() -> None:
    g = AutonomyGuardrails()
    assert (g.max_success_rate_reduction, g.min_reliability_threshold, g.max_cost_increase,
            g.max_latency_increase, g.cooldown_between_changes_hours,
            g.max_consecutive_failures_before_revert, g.approval_required_for_new_skills) == (
        0.02, 0.95, 1.1, 1.2, 6, 3, True)


def test_auto_approved_inside_guardrails_with_flag_on() -> None:
    d = decide(_plan(), "tenant", HEALTHY, NOW - timedelta(hours=7), ON, NOW)
    assert d.status == "auto_approved"


def test_flag_off_by_default_waits_for_approval() -> None:
    d = decide(_plan(), "tenant", HEALTHY, None, {}, NOW)
    assert d.status == "approval_required" and any("enable_autonomous_improvements" in r for r in d.reasons)


def test_system_wide_always_needs_approval() -> None:
    d = decide(_plan(), "system", HEALTHY, None, ON, NOW)
    assert d.status == "approval_required" and "system-wide" in d.reasons[0]


@pytest.mark.parametrize(("metrics", "needle"), [
    ({**HEALTHY, "success_rate": 0.94, "baseline_success_rate": 0.94}, "below 0.95"),
    ({**HEALTHY, "success_rate": 0.96}, "fell"),
    ({**HEALTHY, "cost": 1.2}, "cost"),
    ({**HEALTHY, "latency_p95": 125.0}, "latency"),
    ({**HEALTHY, "consecutive_failures": 3}, "consecutive"),
])
def test_guardrail_breaches_need_approval(metrics: dict[str, float], needle: str) -> None:
    d = decide(_plan(), "tenant", metrics, None, ON, NOW)
    assert d.status == "approval_required" and any(needle in r for r in d.reasons), d.reasons


def test_cooldown_and_risk_and_code() -> None:
    assert decide(_plan(), "tenant", HEALTHY, NOW - timedelta(hours=5), ON, NOW).status == "approval_required"
    assert decide(_plan(risk="high"), "tenant", HEALTHY, None, ON, NOW).status == "approval_required"
    d = decide(_plan(change_type="code", files={"a.py": "x = 1"}), "tenant", HEALTHY, None, ON, NOW)
    assert d.status == "approval_required" and any("new code" in r for r in d.reasons)


def test_denied_out_of_bounds_or_empty() -> None:
    bad = _plan(changes=[ParameterChange("cache_size", 1024, 10**9, (16, 1_048_576))])
    assert decide(bad, "tenant", HEALTHY, None, ON, NOW).status == "denied"
    assert decide(_plan(changes=[]), "tenant", HEALTHY, None, ON, NOW).status == "denied"
    assert decide(_plan(tenant_id=""), "tenant", HEALTHY, None, ON, NOW).status == "denied"


def test_should_revert() -> None:
    assert should_revert(3) and not should_revert(2)
