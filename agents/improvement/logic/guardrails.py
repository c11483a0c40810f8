"""Autonomy guardrails: what auto-approves; who may decide is streams/decisions.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from agents.improvement.logic.playbooks import Plan, within_bounds

ApprovalStatus = Literal["auto_approved", "approval_required", "denied"]
NEW_SKILL_CHANGE_TYPES = frozenset({"code", "new_skill", "component"})


@dataclass(frozen=True)
class AutonomyGuardrails:
    """The bounds on autonomous changes (docs/formulas.md)."""

    max_success_rate_reduction: float = 0.02  # don't reduce reliability > 2 %
    min_reliability_threshold: float = 0.95  # never go below 95 % success
    max_cost_increase: float = 1.1  # don't increase cost > 10 %
    max_latency_increase: float = 1.2  # don't increase latency > 20 %
    cooldown_between_changes_hours: int = 6  # wait 6 hours between changes of the same component
    max_consecutive_failures_before_revert: int = 3  # auto-revert after 3 failures
    approval_required_for_new_skills: bool = True  # always require human approval for new skills


@dataclass(frozen=True)
class ApprovalDecision:
    status: ApprovalStatus
    reasons: list[str] = field(default_factory=list)


def violations(
    current_metrics: Mapping[str, float],
    last_change_at: datetime | None,
    now: datetime,
    guardrails: AutonomyGuardrails,
) -> list[str]:
    """Guardrail breaches given the component's metrics.  Keys read (each optional):
    success_rate, baseline_success_rate, cost, baseline_cost, latency_p95, baseline_latency_p95,
    consecutive_failures.  Missing keys are not checked."""
    out: list[str] = []
    m = current_metrics
    if "success_rate" in m:
        if m["success_rate"] < guardrails.min_reliability_threshold:
            out.append(f"success rate {m['success_rate']:.3f} below {guardrails.min_reliability_threshold}")
        base = m.get("baseline_success_rate")
        if base is not None and base - m["success_rate"] > guardrails.max_success_rate_reduction:
            out.append(f"success rate fell {base - m['success_rate']:.3f} (> {guardrails.max_success_rate_reduction})")
    if m.get("baseline_cost") and "cost" in m and m["cost"] / m["baseline_cost"] > guardrails.max_cost_increase:
        out.append(f"cost x{m['cost'] / m['baseline_cost']:.2f} above x{guardrails.max_cost_increase}")
    base_lat = m.get("baseline_latency_p95")
    if base_lat and "latency_p95" in m and m["latency_p95"] / base_lat > guardrails.max_latency_increase:
        out.append(f"latency x{m['latency_p95'] / base_lat:.2f} above x{guardrails.max_latency_increase}")
    if m.get("consecutive_failures", 0) >= guardrails.max_consecutive_failures_before_revert:
        out.append(f"{int(m['consecutive_failures'])} consecutive failures "
                   f"(>= {guardrails.max_consecutive_failures_before_revert})")
    if last_change_at is not None:
        cooldown = timedelta(hours=guardrails.cooldown_between_changes_hours)
        if now - last_change_at < cooldown:
            out.append(f"last change {now - last_change_at} ago, cooldown {cooldown}")
    return out


def decide(
    plan: Plan,
    scope: Literal["tenant", "system"],
    current_metrics: Mapping[str, float],
    last_change_at: datetime | None,
    flags: Mapping[str, bool],
    now: datetime,
    guardrails: AutonomyGuardrails | None = None,
) -> ApprovalDecision:
    """auto_approved only for a tenant-scoped, in-bounds, low/medium-risk plan inside every guardrail
    with the `enable_autonomous_improvements` flag on (off by default: everything waits for a person).
    System-wide changes always need approval.  denied: a plan that leaves its parameter bounds, an
    empty plan, or a tenant-scoped plan without a tenant — no approval can make those safe."""
    g = guardrails or AutonomyGuardrails()
    bounds = within_bounds(plan)
    if bounds:
        return ApprovalDecision("denied", [f"out of bounds: {b}" for b in bounds])
    if not plan.changes and not plan.files:
        return ApprovalDecision("denied", ["plan changes nothing"])
    if scope == "tenant" and not plan.tenant_id:
        return ApprovalDecision("denied", ["tenant-scoped plan without a tenant_id"])
    reasons: list[str] = []
    if scope == "system":
        reasons.append("system-wide change: approval always required")
    if not flags.get("enable_autonomous_improvements", False):
        reasons.append("enable_autonomous_improvements is off")
    if g.approval_required_for_new_skills and (plan.change_type in NEW_SKILL_CHANGE_TYPES or plan.files):
        reasons.append(f"{plan.change_type} change (new code/skill): human approval required")
    if plan.risk == "high":
        reasons.append("high-risk plan")
    reasons.extend(f"guardrail: {v}" for v in violations(current_metrics, last_change_at, now, g))
    if reasons:
        return ApprovalDecision("approval_required", reasons)
    return ApprovalDecision("auto_approved", ["tenant-scoped, within bounds and all guardrails"])


def should_revert(consecutive_failures: int, guardrails: AutonomyGuardrails | None = None) -> bool:
    """docs/formulas.md: revert automatically after this many consecutive failures."""
    g = guardrails or AutonomyGuardrails()
    return consecutive_failures >= g.max_consecutive_failures_before_revert
