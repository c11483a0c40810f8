"""Cycle agent: manual, emergency and scheduled cycles; approval decisions; flags; cycle reports."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
import structlog

from agents.audit import audit_record, write_audit
from agents.improvement.context import step_context
from agents.improvement.logic.guardrails import can_decide
from agents.improvement.logic.lifecycle import is_terminal, new_event, next_event
from agents.improvement.logic.verdicts import build_cycle_report
from agents.opportunities.logic.impact import prioritize
from streams import app as A
from streams.metrics import CYCLES_COMPLETED, CYCLES_STARTED
from streams.records import Command, ImprovementEvent, ImprovementOpportunity
from streams.runtime import survives_broker_outage

log = structlog.get_logger(__name__)
EMERGENCY_WAIT_SECONDS = 15.0
DECISION_WAIT_SECONDS = 10.0  # the alarm's own opportunity may still be on its way through the agents


@dataclass
class CycleRun:
    cycle_id: str
    kind: str
    start: datetime
    tenant_id: str | None
    improvement_ids: list[str] = field(default_factory=list)
    opportunities_identified: int = 0


_cycles: dict[str, CycleRun] = {}


def cycle_id_for(cmd: Command) -> str:
    """The MCP server names the cycle (args.cycle_id) so its tool can follow it; else derived from the command."""
    given = cmd.args.get("cycle_id")
    return str(given) if given else "cycle-" + hashlib.sha1(cmd.command_id.encode()).hexdigest()[:16]


def improvement_id_for(cycle_id: str, opportunity_id: str) -> str:
    return "imp-" + hashlib.sha1(f"{cycle_id}|{opportunity_id}".encode()).hexdigest()[:16]


def _candidates(opps: list[ImprovementOpportunity], busy: set[str], tenant: str | None, since: datetime,
                component: str | None, problem: str | None) -> list[ImprovementOpportunity]:
    out = [o for o in opps if o.status == "open" and o.opportunity_id not in busy and o.last_seen >= since
           and (tenant is None or o.tenant_id == tenant)]
    if component:
        focused = [o for o in out if component in o.affected_components]
        if problem:
            focused = sorted(focused, key=lambda o: o.problem_type != problem)
        return focused
    return prioritize(out)


async def start_cycle(cmd: Command) -> CycleRun:
    """Phase 2: pick the top opportunities in the window and start one improvement for each."""
    ctx = await step_context()
    args = cmd.args
    kind = str(args.get("cycle_kind", "manual"))
    window_h = float(args.get("analysis_window_hours", 24))
    max_n = max(1, int(args.get("max_improvements", A.settings.max_concurrent_improvements)))
    now = datetime.now(UTC)
    run = CycleRun(cycle_id_for(cmd), kind, now, cmd.tenant_id)
    if run.cycle_id in _cycles:
        return _cycles[run.cycle_id]  # a redelivered command
    _cycles[run.cycle_id] = run
    CYCLES_STARTED.labels(kind).inc()
    component = args.get("component")
    problem = problem_family_hint(args)
    # An emergency waits for the alarm's own opportunity; any cycle gives the views a moment to catch up.
    deadline = asyncio.get_running_loop().time() + (EMERGENCY_WAIT_SECONDS if kind == "emergency" else 10.0)
    while True:
        busy = {ex.opportunity.opportunity_id for ex in ctx.views.improvements.values()
                if ex.opportunity is not None and not is_terminal(ex.status)}
        picked = _candidates(list(ctx.views.opportunities.values()), busy, cmd.tenant_id,
                             now - timedelta(hours=window_h), component, problem)
        if picked or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.25)
    run.opportunities_identified = len(picked)
    for opp in picked[:max_n]:
        imp = improvement_id_for(run.cycle_id, opp.opportunity_id)
        run.improvement_ids.append(imp)
        ev = new_event(imp, "pending", datetime.now(UTC), actor=cmd.actor,
                       reason=f"{kind} cycle {run.cycle_id}: impact {opp.impact_score:.0f} ({opp.priority})",
                       data={"opportunity": opp.model_dump(mode="json"), "requested_by": cmd.actor,
                             "cycle_kind": kind}, sequence=0, cycle_id=run.cycle_id, tenant_id=opp.tenant_id)
        await A.improvement_events_topic.send(key=imp.encode(), value=ev.to_bytes())
    await write_audit(audit_record("improvement_cycle_started", cmd.actor, tenant_id=cmd.tenant_id,
                                   target=run.cycle_id, detail={"kind": kind, "command_id": cmd.command_id,
                                                                "improvements": run.improvement_ids,
                                                                "opportunities": len(picked), **args}),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")
    start_report = build_cycle_report(run.cycle_id, kind, now, now, [],  # type: ignore[arg-type]
                                      opportunities_identified=len(picked), tenant_id=cmd.tenant_id)
    start_report.end_time = None
    start_report.duration_seconds = None
    await A.cycle_reports_topic.send(key=run.cycle_id.encode(), value=start_report.to_bytes())
    log.info("cycle started", cycle=run.cycle_id, kind=kind, improvements=run.improvement_ids)
    return run


def problem_family_hint(args: dict[str, Any]) -> str | None:
    p = args.get("problem_type")
    return str(p) if p else None


async def decide(cmd: Command) -> None:
    """approve / reject / defer an improvement waiting for a person: only an approver, never the requester."""
    ctx = await step_context()
    imp = cmd.improvement_id or ""
    ex = ctx.views.improvements.get(imp)
    deadline = asyncio.get_running_loop().time() + DECISION_WAIT_SECONDS
    # The decision may overtake the state (it was read off improvements.events): wait for the view to catch up.
    while (ex is None or ex.status in ("pending", "queued", "generating", "validating")) \
            and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        ex = ctx.views.improvements.get(imp)
    ok = ex is not None and can_decide(cmd.actor, cmd.roles, ex.requested_by)
    detail: dict[str, Any] = {"command_id": cmd.command_id, "reason": cmd.args.get("reason", ""),
                              "status": ex.status if ex else None, "allowed": ok}
    await write_audit(audit_record(f"improvement_{cmd.kind}", cmd.actor, tenant_id=ex.tenant_id if ex else None,
                                   target=imp, detail=detail), A.audit_topic,
                      A.settings.kaizen_data_dir / "audit.jsonl")
    if ex is None or not ok or ex.status not in ("awaiting_approval", "deferred"):
        log.warning("decision refused", improvement=imp, actor=cmd.actor, kind=cmd.kind,
                    status=ex.status if ex else "unknown", allowed=ok)
        return
    reason = str(cmd.args.get("reason", "")) or f"{cmd.kind} by {cmd.actor}"
    now = datetime.now(UTC)
    events: list[ImprovementEvent] = []
    if cmd.kind == "reject":
        events = [next_event(ex, "rejected", now, actor=cmd.actor, reason=reason)]
    elif cmd.kind == "defer":
        if ex.status == "awaiting_approval":
            events = [next_event(ex, "deferred", now, actor=cmd.actor, reason=reason)]
    else:
        if ex.status == "deferred":
            first = next_event(ex, "awaiting_approval", now, actor=cmd.actor, reason="un-deferred")
            from agents.improvement.logic.lifecycle import fold

            events = [first, next_event(fold(ex, first), "deploying", now, actor=cmd.actor, reason=reason,
                                        data={"approval": {"status": "approved", "by": cmd.actor}})]
        else:
            events = [next_event(ex, "deploying", now, actor=cmd.actor, reason=reason,
                                 data={"approval": {"status": "approved", "by": cmd.actor}})]
    for ev in events:
        await A.improvement_events_topic.send(key=ev.improvement_id.encode(), value=ev.to_bytes())


async def set_flag(cmd: Command) -> None:
    name = str(cmd.args.get("name", ""))
    if not name.startswith("enable_") or "admin" not in cmd.roles:
        log.warning("flag change refused", flag=name, actor=cmd.actor)
        return
    value = bool(cmd.args.get("value"))
    await A.config_topic.send(key=f"flags/{name}".encode(), value=orjson.dumps(
        {"value": value, "actor": cmd.actor, "at": datetime.now(UTC).isoformat()}))
    await write_audit(audit_record("set_flag", cmd.actor, target=name, detail={"value": value}),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")


async def generate_component(cmd: Command) -> None:
    ctx = await step_context()
    if not ctx.flags()["enable_component_generation"]:
        log.warning("component generation disabled", actor=cmd.actor)
        return
    res = await ctx.generator.generate_component(str(cmd.args.get("component_type", "service")),
                                                 cmd.args.get("requirements", {}), cmd.args.get("context"),
                                                 tenant_id=cmd.tenant_id)
    await write_audit(audit_record("code_generation", cmd.actor, tenant_id=cmd.tenant_id,
                                   target=str(cmd.args.get("component_type")), detail=res.as_dict()),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")


@A.app.agent(A.commands_topic, name="commands")
async def commands(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        try:
            cmd = Command.from_bytes(event.value)
        except ValueError as exc:
            log.error("invalid command", error=str(exc)[:300])
            continue
        age = (datetime.now(UTC) - cmd.timestamp).total_seconds()
        if age > A.settings.kaizen_command_max_age_seconds:
            # a request for "now": a new consumer group replaying old commands must not re-run them
            log.warning("stale command skipped", command=cmd.command_id, kind=cmd.kind, age_seconds=round(age))
            continue
        try:
            await handle_command(cmd)
        except Exception:  # noqa: BLE001 - one failing command must not stop the agent
            log.exception("command failed", command=cmd.command_id, kind=cmd.kind)


async def handle_command(cmd: Command) -> None:
    if cmd.kind == "trigger_cycle":
        await start_cycle(cmd)
    elif cmd.kind in ("approve", "reject", "defer"):
        await decide(cmd)
    elif cmd.kind == "set_flag":
        await set_flag(cmd)
    elif cmd.kind == "generate_component":
        await generate_component(cmd)


@A.app.timer(interval=1.0)
@survives_broker_outage
async def report_cycles() -> None:
    """Phase 6: once every improvement of a cycle reached a terminal status, publish its report."""
    if not _cycles:
        return
    ctx = await step_context()
    for cid, run in list(_cycles.items()):
        exs = [ctx.views.improvements.get(i) for i in run.improvement_ids]
        if any(e is None or not is_terminal(e.status) for e in exs):
            continue
        done = [e for e in exs if e is not None]
        assessments = [h.data["impact"] for e in done for h in e.history if "impact" in h.data]
        report = build_cycle_report(cid, run.kind, run.start, datetime.now(UTC), done,  # type: ignore[arg-type]
                                    opportunities_identified=run.opportunities_identified,
                                    assessments=assessments, tenant_id=run.tenant_id)
        await A.cycle_reports_topic.send(key=cid.encode(), value=report.to_bytes())
        CYCLES_COMPLETED.labels(run.kind).inc()
        del _cycles[cid]
        log.info("cycle completed", cycle=cid, deployed=report.improvements_deployed,
                 rolled_back=report.improvements_rolled_back)


@A.app.timer(interval=30.0, on_leader=True)
@survives_broker_outage
async def scheduled_cycles() -> None:
    """IMPROVEMENT_CYCLE_INTERVAL_HOURS from IMPROVEMENT_CYCLE_START_TIME (UTC); the slot is recorded
    on the config topic so a leader change does not start the same scheduled cycle twice."""
    s = A.settings
    if not s.enable_self_building:
        return
    ctx = await step_context()
    now = datetime.now(UTC)
    hh, mm = (int(x) for x in s.improvement_cycle_start_time.split(":"))
    anchor = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if anchor > now:
        anchor -= timedelta(days=1)
    interval = timedelta(hours=s.improvement_cycle_interval_hours)
    slot = int((now - anchor) / interval)
    slot_id = f"{anchor.date().isoformat()}#{slot}"
    last = ctx.views.config.get("cycles/last_scheduled", {}).get("slot")
    if last == slot_id or (now - anchor - slot * interval) > timedelta(minutes=5):
        return  # already run, or more than 5 minutes past the slot start (e.g. the worker just started)
    await A.config_topic.send(key=b"cycles/last_scheduled", value=orjson.dumps({"slot": slot_id}))
    ctx.views.config["cycles/last_scheduled"] = {"slot": slot_id}
    cmd = Command(command_id=f"cmd-scheduled-{slot_id}", kind="trigger_cycle", timestamp=now, actor="scheduler",
                  roles=["system"], args={"cycle_kind": "scheduled", "analysis_window_hours":
                                          s.improvement_cycle_interval_hours,
                                          "max_improvements": s.max_concurrent_improvements})
    await A.commands_topic.send(key=b"scheduler", value=cmd.to_bytes())

