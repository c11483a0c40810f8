"""Playbook planner: problem types map to bounded, deterministic parameter changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.improvement.logic.playbooks import PARAMETERS, Plan, plan, problem_key, within_bounds
from streams.records import ImprovementOpportunity, TelemetryInsight

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _opp(ptype: str, **kw: Any) -> ImprovementOpportunity:
    base: dict[str, Any] = dict(opportunity_id="o", title="t", description="d", tenant_id="acme",
                                problem_type=ptype, affected_components=["checkout"], first_seen=T0, last_seen=T0)
    base.update(kw)
    return ImprovementOpportunity(**base)


def _params(p: Plan) -> dict[str, Any]:
    return {c.parameter: c.new for c in p.changes}


def test_latency_grows_cache_and_pool() -> None:
    p = plan(_opp("latency"), {"cache_size": 1024, "pool_size": 10})
    assert p.component == "checkout" and p.tenant_id == "acme" and p.playbook == "latency"
    assert _params(p)["cache_size"] == 2048 and _params(p)["pool_size"] == 15
    assert p.risk == "medium"  # the opportunity's default risk_level is higher than the playbook's
    assert not within_bounds(p)


def test_caching_optimization_two_steps() -> None:
    p = plan(_opp("caching_optimization", risk_level="low"), {})
    assert _params(p) == {"cache_size": 4096, "cache_ttl_seconds": 240}
    assert p.risk == "low"


@pytest.mark.parametrize(("category", "expected"), [
    ("timeout", {"timeout_ms", "max_retries", "feature_flags.circuit_breaker"}),
    ("database_connection", {"pool_size", "timeout_ms", "max_retries"}),
    ("api_error", {"max_retries", "feature_flags.circuit_breaker"}),
])
def test_error_pattern_categories(category: str, expected: set[str]) -> None:
    ev = TelemetryInsight(insight_type="error_pattern", severity="high", affected_component="c",
                          affected_tenants=["acme"], description="x", confidence_score=0.9, timestamp=T0,
                          tenant_id="acme", evidence={"category": category})
    opp = _opp("error_pattern", telemetry_evidence=[ev])
    assert problem_key(opp) == f"error_pattern:{category}"
    assert set(_params(plan(opp, {}))) == expected


def test_error_category_from_text_and_routing_shift() -> None:
    opp = _opp("error_pattern", title="Upstream API errors", proposed_changes={"failing_target": "eu"})
    p = plan(opp, {"routing.eu": 0.5, "routing.us": 0.5, "max_retries": 5})
    got = _params(p)
    assert "max_retries" not in got  # already at its bound
    assert got["routing.eu"] == 0.4 and got["routing.us"] == 0.6 and p.change_type == "routing"


def test_utilization_scales_down_and_n_plus_one() -> None:
    assert _params(plan(_opp("utilization"), {"concurrency": 8}))["concurrency"] == 5
    assert _params(plan(_opp("n_plus_one"), {}))["feature_flags.batch_queries"] is True


def test_at_bounds_gives_empty_plan_and_unknown_needs_code() -> None:
    p = plan(_opp("caching_optimization"), {"cache_size": 1_048_576, "cache_ttl_seconds": 86_400})
    assert p.changes == [] and "bound" in p.rationale and p.expected_gain_pct == 0
    q = plan(_opp("memory_leak"), {})
    assert q.changes == [] and q.change_type == "code"


def test_out_of_range_current_is_clamped_into_bounds() -> None:
    p = plan(_opp("throughput"), {"concurrency": 10_000, "pool_size": -3})
    assert not within_bounds(p)
    assert _params(p)["concurrency"] == 256


@given(ptype=st.sampled_from(["latency", "timeout", "throughput", "utilization", "cache", "error_rate",
                              "n_plus_one", "database_connection"]),
       values=st.dictionaries(st.sampled_from(sorted(PARAMETERS)), st.floats(-1e7, 1e7, allow_nan=False)))
def test_never_outside_bounds_and_deterministic(ptype: str, values: dict[str, Any]) -> None:
    a, b = plan(_opp(ptype), dict(values)), plan(_opp(ptype), dict(values))
    assert within_bounds(a) == []
    assert a.as_dict() == b.as_dict()


def test_old_value_is_what_the_target_holds_or_absent() -> None:
    from agents.improvement.logic.playbooks import plan as make_plan
    from streams.records import ImprovementOpportunity

    now = "2026-01-01T00:00:00+00:00"
    opp = ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id="acme",
                                 problem_type="latency", first_seen=now, last_seen=now,  # type: ignore[arg-type]
                                 affected_components=["api"])
    absent = {c.parameter: c for c in make_plan(opp, {}).changes}
    assert absent["cache_size"].old is None and absent["cache_size"].new == 2048  # not "1024 -> 2048"
    held = {c.parameter: c for c in make_plan(opp, {"cache_size": 4096.0}).changes}
    assert held["cache_size"].old == 4096.0 and held["cache_size"].new == 8192
