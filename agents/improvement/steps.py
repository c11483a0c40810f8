"""The effects of each improvement phase: plan/generate, validate, decide, deploy, monitor, roll back.

Every step reads the folded ImprovementExecution and returns the next ImprovementEvent(s); event ids
depend only on the state (lifecycle.next_event), and actuators are idempotent per improvement, so a
step re-run after a crash neither duplicates an event nor applies a change twice. Every change is
journalled (agents/improvement/journal.py) before the actuator writes it; undoing changes is a phase
of its own (`rolling_back`, agents/improvement/rollback.py).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import structlog

from agents.healing.logic.policies import strict_validation
from agents.improvement.changeset import check_change_set
from agents.improvement.logic.guardrails import ApprovalDecision, decide
from agents.improvement.logic.lifecycle import next_event
from agents.improvement.logic.playbooks import PARAMETERS, plan
from agents.improvement.logic.verdicts import MetricWindow, assess_impact, judge, summarize
from agents.improvement.rollout import apply_plan, changed_by_others, conflict_event, deployed_changes
from agents.improvement.stepctx import StepContext, component_of, plan_from_dict
from agents.improvement.undo import undo
from connectors.actuators.base import AppliedChange, InvalidIdentifier, check_identifier, logical_key
from streams.records import ImprovementEvent, ImprovementExecution

__all__ = ["StepContext", "current_parameters", "monitor_once", "start_rollback", "step_deploying",
           "step_generating", "step_validating"]
log = structlog.get_logger(__name__)


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
        v = _decode(await ctx.actuator.read(ctx.actuator.full_key(logical_key(tenant, component, name), None)))
        if v is not None:
            out[name] = v
    return out


async def step_generating(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 3: an offline playbook plan, or generated code when no playbook fits."""
    assert ex.opportunity is not None
    now = ctx.clock()
    comp = component_of(ex)
    try:  # target names are built from these: refuse what cannot be named safely (see connectors/actuators/base.py)
        check_identifier(ex.tenant_id, "tenant")
        check_identifier(comp, "component")
    except InvalidIdentifier as exc:
        return [next_event(ex, "failed", now, reason=f"no safe target name: {exc}")]
    # the plan's "old" values are what the actuator holds now (absent: None), never a playbook default
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
    pts = ctx.tap.window(ex.tenant_id, component_of(ex), now - ctx.settings.baseline_window_seconds)
    s = summarize(MetricWindow.from_points(pts))
    out: dict[str, float] = {}
    if "error_rate" in s:
        out["success_rate"] = 1.0 - s["error_rate"]
    return out


def _last_change_at(ctx: StepContext, ex: ImprovementExecution) -> datetime | None:
    comp = component_of(ex)
    times = [o.deployment_time for o in ctx.views.improvements.values()
             if o.improvement_id != ex.improvement_id and o.tenant_id == ex.tenant_id and o.deployment_time
             and o.opportunity and comp in o.opportunity.affected_components and o.status == "completed"]
    return max(times) if times else None


async def step_validating(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 4a: validate generated code / bounds, then the guardrails decide: auto, approval, denied."""
    now = ctx.clock()
    p = plan_from_dict(ex.plan)
    validation: dict[str, Any] = {"ok": True, "checks": {}}
    if ex.generated_code or p.files or (p.change_type == "code" and not p.changes):
        # what will be written (the plan's files) and what was generated, through the one validation that
        # `kaizen validate` runs too; the record carries every finding and the full diff for the approver
        res, validation = await check_change_set(
            ctx.settings, ctx.files_actuator, {**p.files, **ex.generated_code},
            ex.tenant_id if ex.opportunity and ex.opportunity.scope == "tenant" else None, component_of(ex))
        if not res.ok:
            return [next_event(ex, "failed", now, reason="validation failed: " + res.summary(),
                               data={"validation": validation})]
    scope = ex.opportunity.scope if ex.opportunity else "tenant"
    decision = decide(p, scope, _metrics_for_guardrails(ctx, ex), _last_change_at(ctx, ex), ctx.flags(), now)
    if decision.status == "auto_approved" and strict_validation(ctx.views.config, now, ex.tenant_id):
        # enforce_test_standards set strict validation (docs/healing.md): nothing deploys unseen meanwhile
        decision = ApprovalDecision("approval_required", ["strict validation in force (test failures above 5 %)"])
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
    pts = ctx.tap.window(ex.tenant_id, component_of(ex), until - ctx.settings.baseline_window_seconds, until)
    return summarize(MetricWindow.from_points(pts))


async def step_deploying(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Phase 4b: store the baseline, apply to the canary (idempotent per improvement), start monitoring."""
    now = ctx.clock()
    baseline = ex.baseline or _baseline(ctx, ex, now.timestamp())
    has_config = bool(plan_from_dict(ex.plan).changes)
    canary = await apply_plan(ctx, ex, "canary") if has_config else []
    full: list[dict[str, Any]] = [] if has_config else await apply_plan(ctx, ex, None)
    stage = "canary" if has_config else "full"
    # the stage is judged on samples from when every change of it is in place (applying takes a while)
    deployment = {"stage": stage, "canary": canary, "full": full, "started_at": now.timestamp(),
                  "stage_started_at": ctx.clock().timestamp(), "actuator": ctx.settings.kaizen_actuator}
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


def start_rollback(ctx: StepContext, ex: ImprovementExecution, verdict: str, degradation: float, reason: str,
                   current: dict[str, float]) -> list[ImprovementEvent]:
    """Enter `rolling_back` (the undo itself is its own phase: retried until every target is back)."""
    now = ctx.clock()
    data: dict[str, Any] = {"verdict": verdict, "degradation": degradation,
                            "monitoring_metrics": {"latency_p95": [current.get("latency_p95", 0.0)]}}
    if current:  # the outcome event carries it as "impact" (one assessment per improvement in the report)
        data["assessment"] = _impact(ex, current, rolled_back=True, now=now)
    if not ctx.flags()["enable_improvement_rollback"]:
        # not abandoned: paused for a person, the changes listed, visible in MCP
        return [next_event(ex, "conflict", now, reason=f"{reason}; rollback disabled by enable_improvement_rollback",
                           data={**data, "conflicts": [c.key for c in deployed_changes(ex)]})]
    return [next_event(ex, "rolling_back", now, reason=reason, data=data)]


_SIGNALS = frozenset({"latency_p95", "error_rate", "throughput"})


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
    comp = component_of(ex)
    variant = "canary" if stage == "canary" and ctx.tap.has_variant(ex.tenant_id, comp, "canary", since) else None
    samples = MetricWindow.from_points(ctx.tap.window(ex.tenant_id, comp, since, variant=variant))
    if variant is not None:
        samples.throughput = []  # a canary carries a share of the traffic: its volume is no regression
    canary_len = max(3.0, duration * ctx.settings.canary_share_of_monitoring)
    stage_len = canary_len if stage == "canary" else max(3.0, duration - canary_len)
    # A stage is judged over once this worker's tap holds its whole window: nothing still being read back,
    # and telemetry stamped at or after the stage's end. A worker that took the monitoring over (or whose
    # clean metrics lag) may hold only the first samples of the stage, or stable traffic without the
    # canary's: a verdict on those could keep a harmful change that the worker before would have rolled back.
    newest = ctx.tap.newest(ex.tenant_id, comp)
    covered = not ctx.tap.reading(ex.tenant_id, comp) and newest is not None and newest >= since + stage_len
    final = t - since >= stage_len and covered
    baseline = ex.baseline
    if baseline.get("samples", 0.0) < ctx.settings.monitoring_min_samples or not _SIGNALS <= baseline.keys():
        # telemetry lags: points from before the deploy may have arrived since (a baseline stored without some
        # signal, e.g. latency, could not be compared with what is judged); never judge against nothing
        started = float(dep.get("started_at", since))
        again = summarize(MetricWindow.from_points(ctx.tap.window(
            ex.tenant_id, comp, started - ctx.settings.baseline_window_seconds, started)))
        if baseline.get("samples", 0.0) < ctx.settings.monitoring_min_samples or (
                again.get("samples", 0.0) >= ctx.settings.monitoring_min_samples
                and (_SIGNALS & again.keys()) > (_SIGNALS & baseline.keys())):
            baseline = again
    if baseline.get("samples", 0.0) < ctx.settings.monitoring_min_samples:
        if t - float(dep.get("started_at", since)) < 2 * duration:
            return []  # paused: no baseline yet
        return start_rollback(ctx, ex, "inconclusive", 0.0, "no baseline telemetry before deploy", {})
    v = judge(baseline, samples, threshold, ctx.settings.monitoring_min_samples, final=final)
    if v.decision == "rollback":
        return start_rollback(ctx, ex, "rollback", v.degradation, v.reason, v.current)
    try:
        mine_no_more = await changed_by_others(ctx, ex, force=final)
    except Exception as exc:  # noqa: BLE001 - the target store is unreachable: keep watching, read it later
        log.warning("ownership check failed; retried at the next check", improvement=ex.improvement_id, error=str(exc))
        return []
    if mine_no_more:
        return conflict_event(ctx, ex, mine_no_more)
    if not final or v.decision == "continue":
        # counted from the stage's end: a worker that took over late, or whose telemetry stalled for a while,
        # gets the whole pause to see the stage's window arrive before the change is undone as unjudged
        if not covered and t - (since + stage_len) >= 2 * duration:
            return start_rollback(ctx, ex, "inconclusive", v.degradation,
                                  f"telemetry of the {stage} stage incomplete {2 * duration:.0f}s after its end",
                                  v.current)
        return []
    if v.decision == "inconclusive":
        if t - float(dep.get("started_at", since)) < 2 * duration:
            return []  # paused: hold the rollout where it is and wait for more telemetry
        return start_rollback(ctx, ex, "inconclusive", v.degradation,
                              f"inconclusive after {2 * duration:.0f}s: {v.reason}", v.current)
    if stage == "canary":
        try:
            full = await apply_plan(ctx, ex, None)
        except Exception as exc:  # noqa: BLE001 - a failed rollout step is retried at the next check; the
            # canary stays watched, and what was applied is journalled (a rollback finds it)
            log.warning("full rollout failed; retried", improvement=ex.improvement_id, error=str(exc))
            return []
        deployment = {**dep, "stage": "full", "full": full, "stage_started_at": ctx.clock().timestamp(),
                      "canary_verdict": v.reason}
        return [next_event(ex, "monitoring", now, reason="canary healthy; rolled out to all traffic",
                           data={"deployment": deployment})]
    for change in [AppliedChange.from_dict(raw) for raw in reversed(dep.get("canary", []))]:
        # the full rollout now carries the value: drop the canary key (kept if someone else changed it)
        try:
            outcome = await undo(ctx.actuator_of(change), change)
        except Exception as exc:  # noqa: BLE001 - unreachable target store: try again at the next check
            log.warning("canary key not dropped yet; retried", key=change.key, error=str(exc))
            return []
        await ctx.journal_append("undone" if outcome == "undone" else "conflict", change, ex.tenant_id)
    for raw in dep.get("full", []):
        await ctx.journal_append("kept", AppliedChange.from_dict(raw), ex.tenant_id)
    impact = _impact(ex, v.current, rolled_back=False, now=now)
    return [next_event(ex, "completed", now, reason=v.reason,
                       data={"verdict": "keep", "degradation": v.degradation, "impact": impact,
                             "monitoring_metrics": {"latency_p95": [v.current.get("latency_p95", 0.0)]}})]
