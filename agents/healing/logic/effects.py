"""What each healing action does inside kaizen: a cycle command or a policy change, linked to its firing (pure)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from agents.healing.logic.healing import ActionPlan, TriggerFiring
from agents.healing.logic.policies import (
    COST_POLICY_KEY,
    OWN_TENANT,
    STRICTNESS_KEY,
    TOKEN_BUDGET_KEY,
    cost_policy_value,
    policy_key,
    strictness_value,
    token_budget_value,
)
from connectors.actuators.base import InvalidIdentifier, check_identifier
from streams.records import ImprovementOpportunity, Severity, TelemetryInsight

__all__ = ["EFFECTS", "KAIZEN_TENANT", "ROLES", "Effect", "EffectSpec", "effect_for", "healing_opportunity"]

EffectKind = Literal["improvement_cycle", "policy_change", "analysis_cycle", "no_target"]

# The agent names of the trigger-framework tables are kaizen roles: the actor of every command and
# config change a healing action makes (`healing:<role>`), never an approver (see docs/healing.md).
ROLES: dict[str, str] = {
    "ChiefArchitectAgent": "chief_architect",
    "AuditorAgent": "auditor",
    "TestGeneratorAgent": "test_generator",
    "PlannerAgent": "planner",
}
# kaizen's own executions (LLM calls, improvement steps, connector polls) are reported under this tenant.
KAIZEN_TENANT = OWN_TENANT
# How long a policy set by a healing action stays in force unless a later firing renews it.
POLICY_TTL_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class EffectSpec:
    """The effect of one action: a focused cycle (problem type, cycle kind), a policy, or an analysis cycle."""

    kind: EffectKind
    summary: str
    problem_type: str = ""
    cycle_kind: Literal["manual", "emergency"] = "manual"
    policy_key: str = ""


EFFECTS: dict[str, EffectSpec] = {
    "analyze_slow_tasks": EffectSpec("improvement_cycle", "focused improvement cycle (latency playbook)",
                                     problem_type="latency"),
    "resolve_retry_failures": EffectSpec("improvement_cycle", "focused improvement cycle (error-rate playbook)",
                                         problem_type="error_rate"),
    "handle_error_spike": EffectSpec("improvement_cycle", "emergency focused cycle (error-rate playbook)",
                                     problem_type="error_rate", cycle_kind="emergency"),
    "optimize_task_performance": EffectSpec("improvement_cycle", "focused improvement cycle (latency playbook)",
                                            problem_type="latency"),
    "optimize_token_usage": EffectSpec("policy_change", "LLM token budget halved", policy_key=TOKEN_BUDGET_KEY),
    "adjust_cost_policies": EffectSpec("policy_change", "LLM cost cap per call", policy_key=COST_POLICY_KEY),
    "enforce_test_standards": EffectSpec("policy_change", "strict validation: every change needs approval",
                                         policy_key=STRICTNESS_KEY),
    "comprehensive_system_analysis": EffectSpec("analysis_cycle", "system-wide analysis cycle"),
}
_SEVERITY: dict[str, Severity] = {"emergency": "critical", "critical": "critical", "high": "high",
                                  "medium": "medium", "low": "low"}
_IMPACT = {"emergency": 6000.0, "critical": 6000.0, "high": 2000.0, "medium": 500.0, "low": 50.0}


class Effect(BaseModel):
    """One effect of a firing: the command to publish on `commands` or the record for `config.changes`.

    The command is the `commands` wire record: a trigger_cycle with its fields under `args` (read by the
    cycle agent like any other cycle request, so guardrails, approval and MAX_CONCURRENT_IMPROVEMENTS apply).
    """

    effect_id: str
    kind: EffectKind
    firing_id: str
    trigger: str
    action: str
    role: str
    tenant_id: str
    component: str
    timestamp: datetime
    summary: str
    command: dict[str, Any] | None = None
    config_key: str | None = None
    config_value: dict[str, Any] | None = None

    def link(self) -> dict[str, Any]:
        """What ties the effect's events back to its firing (carried in commands and config records)."""
        return {"firing_id": self.firing_id, "trigger": self.trigger, "action": self.action, "role": self.role,
                "effect_id": self.effect_id}

    def history_record(self) -> dict[str, Any]:
        """The `healing.history` line of this effect."""
        ref: dict[str, Any] = {}
        if self.command is not None:
            args = self.command["args"]
            ref = {"command_id": self.command["command_id"], "cycle_id": args.get("cycle_id"),
                   "cycle_kind": args.get("cycle_kind")}
        if self.config_key is not None:
            ref = {"config_key": self.config_key, "config_value": self.config_value}
        return {"kind": "effect", "timestamp": self.timestamp.isoformat(), "name": self.action,
                "effect": self.kind, "summary": self.summary, "tenant_id": self.tenant_id,
                "component": self.component, **self.link(), **ref}


def role_of(agent: str) -> str:
    return ROLES.get(agent, agent.removesuffix("Agent").lower() or "healing")


def _id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def healing_opportunity(plan: ActionPlan, firing: TriggerFiring, problem_type: str) -> ImprovementOpportunity:
    """The opportunity a focused cycle works on when none is open for the component: the firing as its
    evidence, the action's change hint among its proposed changes. Its id is the one the opportunity
    stage gives the same (tenant, component, problem type), so an open one is the same opportunity."""
    from agents.opportunities.logic.opportunities import opportunity_id

    severity = _SEVERITY.get(plan.priority, "medium")
    evidence = TelemetryInsight(
        insight_type="self_healing_trigger", severity=severity, affected_component=firing.component,
        affected_tenants=[firing.tenant_id], tenant_id=firing.tenant_id, confidence_score=0.9,
        metrics={"value": firing.value, "threshold": firing.threshold}, timestamp=firing.timestamp,
        description=f"{firing.trigger}: {firing.value:g} against threshold {firing.threshold:g}",
        recommended_action=plan.action, source="healing", problem_type=problem_type,
        evidence={"firing_id": firing.firing_id, "trigger": firing.trigger},
        insight_id=f"heal-{firing.firing_id}")
    return ImprovementOpportunity(
        opportunity_id=opportunity_id(firing.tenant_id, firing.component, problem_type),
        title=f"{plan.action}: {firing.trigger} on {firing.component}",
        description=f"self-healing trigger {firing.trigger} fired on {firing.component} "
                    f"({firing.value:g} vs {firing.threshold:g}); action {plan.action} by {plan.target_agent}",
        impact_score=_IMPACT.get(plan.priority, 100.0), priority="critical" if severity == "critical" else
        "high" if severity == "high" else "medium", severity=severity, confidence_score=0.9,
        affected_components=[firing.component], affected_tenants=[firing.tenant_id], tenant_id=firing.tenant_id,
        problem_type=problem_type, scope="system" if firing.tenant_id == KAIZEN_TENANT else "tenant",
        requires_approval=firing.tenant_id == KAIZEN_TENANT, telemetry_evidence=[evidence],
        proposed_changes={"change_hint": dict(plan.change_hint), "firing_id": firing.firing_id},
        occurrences=1, first_seen=firing.timestamp, last_seen=firing.timestamp)


def effect_for(plan: ActionPlan, firing: TriggerFiring, now: datetime, current_config: dict[str, Any],
               llm_max_tokens: int, max_improvements: int) -> Effect | None:
    """The effect of one planned action (None for an action kaizen has no effect for, e.g. a custom one).

    `current_config` is the config view (key -> record) the policy changes start from; `now` stamps the
    command (the commands agent skips stale ones) and the policy's expiry.
    """
    spec = EFFECTS.get(plan.action)
    if spec is None:
        return None
    role = role_of(plan.target_agent)
    eid = _id("eff-", firing.firing_id, plan.action)
    base = Effect(effect_id=eid, kind=spec.kind, firing_id=firing.firing_id, trigger=firing.trigger,
                  action=plan.action, role=role, tenant_id=firing.tenant_id, component=firing.component,
                  timestamp=now, summary=spec.summary)
    actor = f"healing:{role}"
    if spec.kind == "policy_change":
        key = policy_key(spec.policy_key, firing.tenant_id)
        value = _policy(spec.policy_key, current_config.get(key), firing, now, llm_max_tokens)
        value["healing"] = base.link()
        base.config_key, base.config_value = key, value
        return base
    if spec.kind == "improvement_cycle":
        unnamed = _no_target(firing)
        if unnamed is not None:
            base.kind = "no_target"
            base.summary = f"no cycle: {unnamed}"
            return base
    command_id = _id("cmd-heal-", firing.firing_id, plan.action)
    cycle_id = _id("cycle-heal-", firing.firing_id, plan.action)
    args: dict[str, Any] = {"cycle_id": cycle_id, "healing": base.link(), "analysis_window_hours": 24}
    if spec.kind == "improvement_cycle":
        opp = healing_opportunity(plan, firing, spec.problem_type)
        args.update(cycle_kind=spec.cycle_kind, component=firing.component, problem_type=spec.problem_type,
                    change_hint=dict(plan.change_hint), max_improvements=1,
                    opportunity=opp.model_dump(mode="json"))
        tenant: str | None = firing.tenant_id
    else:  # analysis_cycle: every tenant's top opportunities, up to MAX_CONCURRENT_IMPROVEMENTS
        args.update(cycle_kind="manual", max_improvements=max_improvements,
                    triggers=list(plan.handoff.get("triggers", [])))
        tenant = None
    base.command = {"kind": "trigger_cycle", "command_id": command_id, "timestamp": now.isoformat(),
                    "actor": actor, "roles": ["healing", role], "tenant_id": tenant, "args": args}
    return base


def _no_target(firing: TriggerFiring) -> str | None:
    """Why a focused cycle on the firing's component could change nothing (None when it could).

    A change is applied under `<tenant>/<component>/<parameter>`, so a component that cannot be a key
    segment can have no change: kaizen's own connector polls and LLM calls (`connector:metrics:checkout`,
    `llm:bedrock`) are such components. Their cycle used to start and fail in its generating step ("no
    safe target name"); in the demo a dozen of them failed at start-up, and those failed steps then fired
    `high_error_rate` on `improvement.generating`. The firing and its action stay in healing.history, with
    this effect saying why no cycle was started."""
    try:
        check_identifier(firing.tenant_id, "tenant")
        check_identifier(firing.component, "component")
    except InvalidIdentifier as exc:
        return f"{exc} — kaizen has no target to change for it"
    return None


def _policy(key: str, current: Any, firing: TriggerFiring, now: datetime, llm_max_tokens: int) -> dict[str, Any]:
    expires = now.timestamp() + POLICY_TTL_SECONDS
    if key == TOKEN_BUDGET_KEY:
        return token_budget_value(current, llm_max_tokens, now, expires)
    if key == COST_POLICY_KEY:
        return cost_policy_value(firing.threshold, now, expires)
    return strictness_value(now, expires)
