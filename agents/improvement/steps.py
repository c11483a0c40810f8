"""The effects of each improvement phase: plan/generate, validate, decide, deploy, monitor, roll back.

Every step reads the folded ImprovementExecution and returns the next ImprovementEvent(s); event ids
depend only on the state (lifecycle.next_event), and actuators are idempotent per improvement, so a
step re-run after a crash neither duplicates an event nor applies a change twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from agents.improvement.generator import CodeGenerator
from agents.improvement.logic.guardrails import decide
from agents.improvement.logic.lifecycle import next_event
from agents.improvement.logic.playbooks import PARAMETERS, ParameterChange, Plan, plan
from agents.improvement.logic.validation import validate
from agents.improvement.logic.verdicts import MetricWindow, assess_impact, judge, summarize
from agents.improvement.metrics_tap import MetricsTap
from connectors.actuators.base import Actuator, AppliedChange, FingerprintMismatch, encode_value, logical_key
from streams.records import ImprovementEvent, ImprovementExecution
from streams.settings import Settings
from streams.views import StateViews

log = structlog.get_logger(__name__)
FLAG_NAMES = ("enable_self_building", "enable_cloudwatch_streaming", "enable_autonomous_improvements",
              "enable_component_generation", "enable_improvement_rollback")


@dataclass
class StepContext:
    """What the steps need from the worker: settings, views, actuators, generator and a clock."""

    settings: Settings
    views: StateViews
    tap: MetricsTap
    actuator: Actuator
    files_actuator: Actuator | None
    generator: CodeGenerator
    clock: Any = field(default=lambda: datetime.now(UTC))

    def flags(self) -> dict[str, bool]:
        base = {n: bool(getattr(self.settings, n)) for n in FLAG_NAMES}
        base.update(self.views.flags)
        return base


def _component(ex: ImprovementExecution) -> str:
    opp = ex.opportunity
    return opp.affected_components[0] if opp and opp.affected_components else "default"


def plan_from_dict(d: dict[str, Any]) -> Plan:
    changes = [ParameterChange(c["parameter"], c.get("old"), c["new"],
                               tuple(c["bounds"]) if c.get("bounds") else None)  # type: ignore[arg-type]
               for c in d.get("changes", [])]
    return Plan(d["tenant_id"], d["component"], d.get("playbook", "?"), changes, d.get("rationale", ""),
                float(d.get("expected_gain_pct", 0.0)), d.get("risk", "medium"),
                change_type=d.get("change_type", "configuration"), files=dict(d.get("files", {})))


def _decode(raw: str | None) -> float | str | bool | None:
    if raw is None:
        return None
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return float(raw)
    except ValueError:
        return raw


async def current_parameters(ctx: StepContext, tenant: str, component: str) -> dict[str, Any]:
    names = [*PARAMETERS, "feature_flags.circuit_breaker", "feature_flags.load_shedding",
             "feature_flags.batch_queries"]
    out: dict[str, Any] = {}
    for name in names:
        v = _decode(await ctx.actuator.read(logical_key(tenant, component, name)))
        if v is not None:
            out[name] = v
    return out


async def step_generating(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 3: an offline playbook plan, or generated code when no playbook fits."""
    assert ex.opportunity is not None
    now = ctx.clock()
    comp = _component(ex)
    current = await current_parameters(ctx, ex.tenant_id, comp)
    p = plan(ex.opportunity, current, comp)
    data: dict[str, Any] = {"plan": p.as_dict()}
    if not p.changes and p.change_type == "code":
        if not ctx.flags()["enable_component_generation"]:
            return [next_event(ex, "failed", now, reason="no playbook fits and code generation is disabled",
                               data=data)]
        started = time.monotonic()
        result = await ctx.generator.generate_improvement(ex.opportunity)
        p.files.update(result.files)
        data = {"plan": p.as_dict(), "generated_code": result.files,
                "generation": {**result.as_dict(), "duration_ms": round((time.monotonic() - started) * 1000, 1)}}
    return [next_event(ex, "validating", now, reason=p.rationale, data=data)]


def _metrics_for_guardrails(ctx: StepContext, ex: ImprovementExecution) -> dict[str, float]:
    now = time.time()
    pts = ctx.tap.window(ex.tenant_id, _component(ex), now - ctx.settings.baseline_window_seconds)
    s = summarize(MetricWindow.from_points(pts))
    out: dict[str, float] = {}
    if "error_rate" in s:
        out["success_rate"] = 1.0 - s["error_rate"]
    return out


def _last_change_at(ctx: StepContext, ex: ImprovementExecution) -> datetime | None:
    comp = _component(ex)
    times = [o.deployment_time for o in ctx.views.improvements.values()
             if o.improvement_id != ex.improvement_id and o.tenant_id == ex.tenant_id and o.deployment_time
             and o.opportunity and comp in o.opportunity.affected_components and o.status == "completed"]
    return max(times) if times else None


async def step_validating(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 4a: validate generated code / bounds, then the guardrails decide: auto, approval, denied."""
    now = ctx.clock()
    p = plan_from_dict(ex.plan)
    validation: dict[str, Any] = {"ok": True, "checks": {}}
    if ex.generated_code:
        res = validate(ex.generated_code, ex.tenant_id if ex.opportunity and ex.opportunity.scope == "tenant"
                       else None)
        validation = {"ok": res.ok, "checks": res.checks}
        if not res.ok:
            return [next_event(ex, "failed", now, reason="validation failed: " + "; ".join(res.errors())[:800],
                               data={"validation": validation})]
    scope = ex.opportunity.scope if ex.opportunity else "tenant"
    decision = decide(p, scope, _metrics_for_guardrails(ctx, ex), _last_change_at(ctx, ex), ctx.flags(), now)
    approval = {"status": decision.status, "reasons": decision.reasons}
    if decision.status == "denied":
        return [next_event(ex, "failed", now, reason="guardrails denied: " + "; ".join(decision.reasons),
                           data={"validation": validation, "approval": approval})]
    if decision.status == "approval_required":
        return [next_event(ex, "awaiting_approval", now, reason="; ".join(decision.reasons),
                           data={"validation": validation, "approval": approval})]
    return [next_event(ex, "deploying", now, actor="guardrails", reason="auto-approved within guardrails",
                       data={"validation": validation, "approval": approval})]


def _baseline(ctx: StepContext, ex: ImprovementExecution, until: float) -> dict[str, float]:
    pts = ctx.tap.window(ex.tenant_id, _component(ex), until - ctx.settings.baseline_window_seconds, until)
    return summarize(MetricWindow.from_points(pts))


async def _apply(ctx: StepContext, ex: ImprovementExecution, target: str | None) -> list[dict[str, Any]]:
    p = plan_from_dict(ex.plan)
    comp = _component(ex)
    applied: list[AppliedChange] = []
    for c in p.changes:
        applied.append(await ctx.actuator.apply(logical_key(ex.tenant_id, comp, c.parameter), encode_value(c.new),
                                                ex.improvement_id, target=target))
    if p.files and ctx.files_actuator is not None and target is None:
        for path, code in sorted(p.files.items()):
            applied.append(await ctx.files_actuator.apply(path, code, ex.improvement_id))
    return [a.as_dict() for a in applied]


async def step_deploying(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 4b: store the baseline, apply to the canary (idempotent per improvement), start monitoring."""
    now = ctx.clock()
    baseline = ex.baseline or _baseline(ctx, ex, now.timestamp())
    has_config = bool(plan_from_dict(ex.plan).changes)
    canary = await _apply(ctx, ex, "canary") if has_config else []
    full: list[dict[str, Any]] = [] if has_config else await _apply(ctx, ex, None)
    stage = "canary" if has_config else "full"
    deployment = {"stage": stage, "canary": canary, "full": full, "started_at": now.timestamp(),
                  "stage_started_at": now.timestamp(), "actuator": ctx.settings.kaizen_actuator}
    return [next_event(ex, "monitoring", now, reason=f"deployed to {stage}",
                       data={"deployment": deployment, "baseline": baseline})]


def _impact(ex: ImprovementExecution, current: dict[str, float], rolled_back: bool, now: datetime) -> dict[str, Any]:
    started = ex.created_at or now
    gen: dict[str, Any] = {}  # generation usage is carried on the validating event
    for h in ex.history:
        if "generation" in h.data:
            gen = h.data["generation"]
    return assess_impact(ex.improvement_id, rolled_back, ex.baseline, current, (now - started).total_seconds(),
                         llm_tokens=int(gen.get("input_tokens", 0)) + int(gen.get("output_tokens", 0)),
                         llm_cost_usd=float(gen.get("cost_usd", 0.0)))


async def rollback_all(ctx: StepContext, ex: ImprovementExecution) -> list[str]:
    """Undo full then canary changes through the actuator; a fingerprint mismatch stops the undo."""
    undone: list[str] = []
    dep = ex.deployment
    for raw in [*reversed(dep.get("full", [])), *reversed(dep.get("canary", []))]:
        change = AppliedChange.from_dict(raw)
        act = ctx.actuator if not change.key.endswith(".py") or ctx.files_actuator is None else ctx.files_actuator
        await act.rollback(change)
        undone.append(change.key)
    return undone


async def _finish_rollback(ctx: StepContext, ex: ImprovementExecution, verdict: str, degradation: float,
                           reason: str, current: dict[str, float]) -> list[ImprovementEvent]:
    now = ctx.clock()
    if not ctx.flags()["enable_improvement_rollback"]:
        return [next_event(ex, "failed", now, reason=f"{reason}; rollback disabled by enable_improvement_rollback",
                           data={"verdict": verdict, "degradation": degradation})]
    try:
        undone = await rollback_all(ctx, ex)
    except FingerprintMismatch as exc:
        return [next_event(ex, "failed", now, reason=f"rollback refused: {exc}",
                           data={"verdict": "fingerprint_mismatch", "degradation": degradation})]
    impact = _impact(ex, current, rolled_back=True, now=now)
    status = "rolled_back" if verdict == "rollback" else "failed"
    return [next_event(ex, status, now, reason=reason,  # type: ignore[arg-type]
                       data={"verdict": verdict, "degradation": degradation,
                             "monitoring_metrics": {"current": [current.get("latency_p95", 0.0)]},
                             "impact": impact, "rollback": {"undone": undone, "at": now.timestamp()}})]


async def monitor_once(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """One continuous check (called every MONITORING_CHECK_INTERVAL_SECONDS): [] means keep watching."""
    now = ctx.clock()
    t = now.timestamp()
    dep = ex.deployment
    profile = ctx.settings.tenant_profile(ex.tenant_id)
    duration = float(profile.get("monitoring_duration", ctx.settings.monitoring_duration_seconds))
    threshold = float(profile.get("rollback_threshold", ctx.settings.rollback_degradation_threshold))
    stage = dep.get("stage", "full")
    since = float(dep.get("stage_started_at", dep.get("started_at", t)))
    comp = _component(ex)
    variant = "canary" if stage == "canary" and ctx.tap.has_variant(ex.tenant_id, comp, "canary", since) else None
    samples = MetricWindow.from_points(ctx.tap.window(ex.tenant_id, comp, since, variant=variant))
    if variant is not None:
        samples.throughput = []  # a canary carries a share of the traffic: its volume is no regression
    canary_len = max(3.0, duration * ctx.settings.canary_share_of_monitoring)
    stage_len = canary_len if stage == "canary" else max(3.0, duration - canary_len)
    final = t - since >= stage_len
    baseline = ex.baseline
    if baseline.get("samples", 0.0) < ctx.settings.monitoring_min_samples:
        # telemetry lags: points from before the deploy may have arrived since; never judge against nothing
        started = float(dep.get("started_at", since))
        baseline = summarize(MetricWindow.from_points(ctx.tap.window(
            ex.tenant_id, comp, started - ctx.settings.baseline_window_seconds, started)))
    if baseline.get("samples", 0.0) < ctx.settings.monitoring_min_samples:
        if t - float(dep.get("started_at", since)) < 2 * duration:
            return []  # paused: no baseline yet
        return await _finish_rollback(ctx, ex, "inconclusive", 0.0, "no baseline telemetry before deploy", {})
    v = judge(baseline, samples, threshold, ctx.settings.monitoring_min_samples, final=final)
    if v.decision == "rollback":
        return await _finish_rollback(ctx, ex, "rollback", v.degradation, v.reason, v.current)
    if not final or v.decision == "continue":
        return []
    if v.decision == "inconclusive":
        if t - float(dep.get("started_at", since)) < 2 * duration:
            return []  # paused: hold the rollout where it is and wait for more telemetry
        return await _finish_rollback(ctx, ex, "inconclusive", v.degradation,
                                      f"inconclusive after {2 * duration:.0f}s: {v.reason}", v.current)
    if stage == "canary":
        full = await _apply(ctx, ex, None)
        deployment = {**dep, "stage": "full", "full": full, "stage_started_at": t, "canary_verdict": v.reason}
        return [next_event(ex, "monitoring", now, reason="canary healthy; rolled out to all traffic",
                           data={"deployment": deployment})]
    for raw in reversed(dep.get("canary", [])):  # the full rollout now carries the value: drop the canary key
        try:
            await ctx.actuator.rollback(AppliedChange.from_dict(raw))
        except FingerprintMismatch as exc:
            log.warning("canary key changed by someone else; left in place", error=str(exc))
    impact = _impact(ex, v.current, rolled_back=False, now=now)
    return [next_event(ex, "completed", now, reason=v.reason,
                       data={"verdict": "keep", "degradation": v.degradation, "impact": impact,
                             "monitoring_metrics": {"latency_p95": [v.current.get("latency_p95", 0.0)]}})]
