"""Cycle agent: the `commands` topic (cycles, decisions, flags, generation) dispatched by type; cycle reports."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
import structlog

from agents.audit import audit_record, write_audit
from agents.deadletter import dead_letter
from agents.improvement.analysed import current_totals, since
from agents.improvement.context import step_context
from agents.improvement.logic.decisions import decision_events, resolution_events
from agents.improvement.logic.lifecycle import is_terminal, new_event
from agents.improvement.logic.schedule import due
from agents.improvement.logic.verdicts import build_cycle_report
from agents.opportunities.logic.impact import prioritize
from agents.opportunities.logic.rootcause import (
    GROUPS,
    cause_first,
    demand_only,
    deviation,
    likely_cause,
    more_specific,
)
from streams import app as A
from streams import topics as T
from streams.commands import (
    MAX_WINDOW_HOURS,
    Command,
    CommandBase,
    Decision,
    GenerateComponent,
    ResolveConflict,
    SetFlag,
    TriggerCycle,
    parse_command,
)
from streams.decisions import BEFORE_DECISION, DECIDABLE, DecisionName, has_role, refusal
from streams.errors import BadRecord
from streams.metrics import CYCLES_COMPLETED, CYCLES_STARTED
from streams.records import ImprovementEvent, ImprovementExecution, ImprovementOpportunity
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
    telemetry_at_start: dict[str, int] = field(default_factory=dict)  # group totals (analysed.py)
    started: bool = False  # its improvements chosen: reported once they are all terminal (none: at once)


_cycles: dict[str, CycleRun] = {}


def improvement_id_for(cycle_id: str, opportunity_id: str) -> str:
    return "imp-" + hashlib.sha1(f"{cycle_id}|{opportunity_id}".encode()).hexdigest()[:16]


Target = tuple[str, str]  # (tenant, component)
# An incident shows in several components and sources within seconds (a callee's latency in its callers',
# an error rate before the log lines naming the cause): a cycle starts this long after the youngest
# evidence of its tenant at the earliest, so that it chooses among all of it (see rootcause.py).
CAUSE_SETTLE_SECONDS = 5.0
RESERVATION_SECONDS = 120.0
# improvements this process started and its views may not show yet: target -> (improvement id, since)
_reserved: dict[Target, tuple[str, float]] = {}


def target_of(opp: ImprovementOpportunity) -> Target:
    return opp.tenant_id, opp.affected_components[0] if opp.affected_components else "default"


def _in_flight(improvements: dict[str, ImprovementExecution], now: float) -> tuple[set[str], set[Target]]:
    """Opportunities and (tenant, component) targets with an improvement under way. One change at a time
    per component: two at once clash on the same knobs, and each one's monitoring would judge the other's
    effect too."""
    ids: set[str] = set()
    targets: set[Target] = set()
    for ex in improvements.values():
        if ex.opportunity is not None and not is_terminal(ex.status):
            ids.add(ex.opportunity.opportunity_id)
            targets.add(target_of(ex.opportunity))
    for target, (imp, at) in list(_reserved.items()):
        started = improvements.get(imp)
        if (started is not None and is_terminal(started.status)) or (started is None and now - at > RESERVATION_SECONDS):
            del _reserved[target]
        elif started is None:
            targets.add(target)
    return ids, targets


def _candidates(opps: list[ImprovementOpportunity], busy: set[str], tenant: str | None, since: datetime,
                component: str | None, problem: str | None,
                busy_targets: set[Target] | None = None) -> list[ImprovementOpportunity]:
    busy_targets = busy_targets or set()
    out = [o for o in opps if o.status == "open" and o.opportunity_id not in busy and o.last_seen >= since
           and (tenant is None or o.tenant_id == tenant) and target_of(o) not in busy_targets]
    out = [o for o in out if not demand_only(o, opps)]
    if component:
        focused = [o for o in out if component in o.affected_components]
        if problem:
            focused = sorted(focused, key=lambda o: o.problem_type != problem)
        return focused
    # the likely cause first; a symptom whose cause is being worked on waits for its verdict
    window = [o for o in opps if o.last_seen >= since and (tenant is None or o.tenant_id == tenant)]
    ranked = []
    for o in cause_first(prioritize(out), window):
        cause = likely_cause(o, window)
        if cause is not None and target_of(cause) in busy_targets:
            continue
        ranked.append(o)
    return ranked


def _cause_of(first: ImprovementOpportunity, opps: list[ImprovementOpportunity], busy: set[str],
              busy_targets: set[Target], since: datetime) -> ImprovementOpportunity | None:
    """What a focused cycle on `first` works on: the likely cause when another component's concurrent
    deviation explains it, the specific evidence of its own component when it names the cause, else
    `first`; None while that cause is already being worked on."""
    tenant_open = [o for o in opps if o.tenant_id == first.tenant_id and o.last_seen >= since]  # any status
    probe = first
    if deviation(first) is None:  # a self-healing firing measures no baseline: its component's own evidence
        probe = next((o for o in tenant_open if target_of(o) == target_of(first) and deviation(o) is not None
                      and GROUPS.get(o.problem_type) == GROUPS.get(first.problem_type)), first)
    cause = likely_cause(probe, tenant_open)
    if cause is None:
        cause = more_specific(probe, tenant_open) or first
    if cause.opportunity_id in busy or (cause is not first and target_of(cause) in busy_targets):
        return None
    return cause


def _youngest(opps: list[ImprovementOpportunity], tenant: str | None, since: datetime,
              supplied: ImprovementOpportunity | None) -> datetime | None:
    firsts = [o.first_seen for o in opps if o.status == "open" and o.last_seen >= since
              and (tenant is None or o.tenant_id == tenant)]
    if supplied is not None:
        firsts.append(supplied.first_seen)
    return max(firsts) if firsts else None


def _with_supplied(picked: list[ImprovementOpportunity], supplied: ImprovementOpportunity | None,
                   busy: set[str]) -> list[ImprovementOpportunity]:
    """A self-healing cycle works on its own problem type: an open opportunity of that type, else the one
    it brought (none while an improvement of it is still running)."""
    if supplied is None:
        return picked
    same = [o for o in picked if o.problem_type == supplied.problem_type]
    return same or ([] if supplied.opportunity_id in busy else [supplied])


def pending_event(cmd: TriggerCycle, cycle_id: str, opp: ImprovementOpportunity, now: datetime) -> ImprovementEvent:
    """The first event of the improvement a cycle starts for `opp`."""
    return new_event(improvement_id_for(cycle_id, opp.opportunity_id), "pending", now, actor=cmd.actor,
                     reason=f"{cmd.cycle_kind} cycle {cycle_id}: impact {opp.impact_score:.0f} ({opp.priority})",
                     data={"opportunity": opp.model_dump(mode="json"), "requested_by": cmd.actor,
                           "cycle_kind": cmd.cycle_kind, **({"healing": cmd.healing} if cmd.healing else {})},
                     sequence=0, cycle_id=cycle_id, tenant_id=opp.tenant_id)


async def start_cycle(cmd: TriggerCycle) -> CycleRun:
    """Phase 2: pick the top opportunities in the window and start one improvement for each."""
    ctx = await step_context()
    run = CycleRun(cmd.resolved_cycle_id(), cmd.cycle_kind, datetime.now(UTC), cmd.tenant_id)
    if run.cycle_id in _cycles:
        return _cycles[run.cycle_id]  # a redelivered command
    _cycles[run.cycle_id] = run
    log.info("cycle requested", cycle=run.cycle_id, kind=run.kind, tenant=cmd.tenant_id, component=cmd.component)
    try:
        await _start(cmd, run, ctx)
    except BaseException:
        # cancelled (the worker stops) or failed before its improvements were chosen: forgotten, so that the
        # command handled again (unacknowledged, see `commands`) starts it anew instead of finding it here
        if not run.started:
            del _cycles[run.cycle_id]
        raise
    return run


async def _start(cmd: TriggerCycle, run: CycleRun, ctx: Any) -> None:
    kind = run.kind
    max_n = cmd.improvements_cap(A.settings.max_concurrent_improvements)
    now = run.start
    run.telemetry_at_start = current_totals(ctx.views.status)
    CYCLES_STARTED.labels(kind).inc()
    window_start = now - timedelta(hours=cmd.analysis_window_hours)
    youngest = _youngest(list(ctx.views.opportunities.values()), cmd.tenant_id, window_start, cmd.opportunity) \
        if cmd.tenant_id is not None else None
    if youngest is not None:  # let the rest of a fresh incident's evidence arrive (see CAUSE_SETTLE_SECONDS)
        wait = min(CAUSE_SETTLE_SECONDS, (youngest - datetime.now(UTC)).total_seconds() + CAUSE_SETTLE_SECONDS)
        if wait > 0:
            await asyncio.sleep(wait)
    # An emergency waits for the alarm's own opportunity; any cycle gives the views a moment to catch up.
    deadline = asyncio.get_running_loop().time() + (EMERGENCY_WAIT_SECONDS if kind == "emergency" else 10.0)
    measured_by = asyncio.get_running_loop().time() + CAUSE_SETTLE_SECONDS
    while True:
        opps = list(ctx.views.opportunities.values())
        busy, busy_targets = _in_flight(ctx.views.improvements, asyncio.get_running_loop().time())
        picked = _with_supplied(_candidates(opps, busy, cmd.tenant_id, window_start, cmd.component,
                                            cmd.problem_type, busy_targets), cmd.opportunity, busy)
        if cmd.component and picked:
            cause = _cause_of(picked[0], opps, busy, busy_targets, window_start)
            picked = [cause] if cause is not None else []
        # opportunities there but held back (in flight, waiting for their cause, demand): nothing to wait
        # for — and commands are handled one at a time, so a wait here holds up every cycle behind it
        held_back = cmd.opportunity is not None or any(
            o.status == "open" and o.last_seen >= window_start and (cmd.tenant_id is None or o.tenant_id == cmd.tenant_id)
            and (not cmd.component or cmd.component in o.affected_components) for o in opps)
        # a self-healing firing may arrive before its component's insights are folded: with nothing measured
        # to compare with the tenant's other components, give them up to CAUSE_SETTLE_SECONDS more
        unmeasured = bool(cmd.component and picked and cmd.opportunity is not None
                          and picked[0].opportunity_id == cmd.opportunity.opportunity_id
                          and not any(cmd.component in o.affected_components and deviation(o) is not None
                                      for o in opps if o.tenant_id == cmd.tenant_id and o.status == "open"))
        if unmeasured and asyncio.get_running_loop().time() < measured_by:
            await asyncio.sleep(0.25)
            continue
        if picked or held_back or asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(0.25)
    run.opportunities_identified = len(picked)
    run.started = True  # from here on report_cycles may report it
    targets: set[Target] = set()
    for opp in picked:
        if len(run.improvement_ids) >= max_n:
            break
        # one change per component at a time; read afresh, since a cycle running beside this one (another
        # tenant's queue, or "*") may have reserved a target while this one waited or sent
        if target_of(opp) in targets or target_of(opp) in _in_flight(ctx.views.improvements,
                                                                    asyncio.get_running_loop().time())[1]:
            continue
        targets.add(target_of(opp))
        imp = improvement_id_for(run.cycle_id, opp.opportunity_id)
        _reserved[target_of(opp)] = (imp, asyncio.get_running_loop().time())
        run.improvement_ids.append(imp)
        ev = pending_event(cmd, run.cycle_id, opp, datetime.now(UTC))
        await A.improvement_events_topic.send(key=imp.encode(), value=ev.to_bytes())
    await write_audit(audit_record("improvement_cycle_started", cmd.actor, tenant_id=cmd.tenant_id,
                                   target=run.cycle_id, detail={
                                       **cmd.model_dump(mode="json", exclude_none=True, exclude=_ENVELOPE),
                                       "kind": kind, "command_id": cmd.command_id,
                                       "improvements": run.improvement_ids, "opportunities": len(picked)}),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")
    start_report = build_cycle_report(run.cycle_id, kind, now, now, [],  # type: ignore[arg-type]
                                      opportunities_identified=len(picked), tenant_id=cmd.tenant_id)
    start_report.end_time = None
    start_report.duration_seconds = None
    await A.cycle_reports_topic.send(key=run.cycle_id.encode(), value=start_report.to_bytes())
    log.info("cycle started", cycle=run.cycle_id, kind=kind, improvements=run.improvement_ids)


_ENVELOPE = {"command_id", "timestamp", "actor", "roles", "tenant_id", "kind"}


# Statuses an improvement passes through before a conflict: a resolution may overtake the conflict event.
BEFORE_CONFLICT = frozenset({*BEFORE_DECISION, "awaiting_approval", "deploying", "monitoring", "rolling_back"})


async def _current(imp: str, kind: DecisionName) -> ImprovementExecution | None:
    """The improvement as the worker's view has it.  A decision may overtake the state it was made on
    (MCP read it off improvements.events): while the improvement is still before the point where this
    decision applies, wait for the view to catch up."""
    ctx = await step_context()
    ex = ctx.views.improvements.get(imp)
    before = BEFORE_CONFLICT if kind == "resolve_conflict" else BEFORE_DECISION
    deadline = asyncio.get_running_loop().time() + DECISION_WAIT_SECONDS
    while (ex is None or (ex.status in before and ex.status not in DECIDABLE[kind])) \
            and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        ex = ctx.views.improvements.get(imp)
    return ex


async def _permitted(cmd: Decision | ResolveConflict) -> ImprovementExecution | None:
    """The improvement, if streams/decisions.py allows the command on it now; audited either way."""
    ex = await _current(cmd.improvement_id, cmd.kind)
    refused = refusal(cmd.kind, actor=cmd.actor, roles=cmd.roles, all_tenants=cmd.all_tenants,
                      requested_by=ex.requested_by, status=ex.status,
                      system_wide=ex.opportunity is not None and ex.opportunity.scope == "system",
                      improvement_id=cmd.improvement_id, terminal=is_terminal(ex.status)) if ex is not None \
        else None
    why = f"improvement '{cmd.improvement_id}' is unknown" if ex is None else (refused.message if refused else "")
    detail: dict[str, Any] = {"command_id": cmd.command_id, "reason": cmd.reason,
                              "status": ex.status if ex else None, "allowed": not why, "refusal": why,
                              **({"action": cmd.action} if isinstance(cmd, ResolveConflict) else {})}
    await write_audit(audit_record(f"improvement_{cmd.kind}", cmd.actor, tenant_id=ex.tenant_id if ex else None,
                                   target=cmd.improvement_id, detail=detail), A.audit_topic,
                      A.settings.kaizen_data_dir / "audit.jsonl")
    if ex is None or why:
        log.warning("decision refused", improvement=cmd.improvement_id, actor=cmd.actor, kind=cmd.kind,
                    status=ex.status if ex else "unknown", refusal=why)
        return None
    return ex


async def decide(cmd: Decision) -> None:
    """approve / reject / defer an improvement, if streams/decisions.py allows it; audited either way."""
    ex = await _permitted(cmd)
    if ex is not None:
        for ev in decision_events(cmd, ex, datetime.now(UTC)):
            await A.improvement_events_topic.send(key=ev.improvement_id.encode(), value=ev.to_bytes())


async def resolve_conflict(cmd: ResolveConflict) -> None:
    """Move an improvement paused as `conflict` on: retry its rollback, or keep the values someone else set."""
    ex = await _permitted(cmd)
    if ex is not None:
        for ev in resolution_events(cmd, ex, datetime.now(UTC)):
            await A.improvement_events_topic.send(key=ev.improvement_id.encode(), value=ev.to_bytes())


async def set_flag(cmd: SetFlag) -> None:
    if not has_role(cmd.roles, "admin"):
        log.warning("flag change refused: needs role admin", flag=cmd.name, actor=cmd.actor)
        return
    await A.config_topic.send(key=f"flags/{cmd.name}".encode(), value=orjson.dumps(
        {"value": cmd.value, "actor": cmd.actor, "at": datetime.now(UTC).isoformat()}))
    await write_audit(audit_record("set_flag", cmd.actor, target=cmd.name, detail={"value": cmd.value}),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")


async def generate_component(cmd: GenerateComponent) -> None:
    ctx = await step_context()
    if not ctx.flags()["enable_component_generation"]:
        log.warning("component generation disabled", actor=cmd.actor)
        return
    res = await ctx.generator.generate_component(cmd.component_type, cmd.requirements, cmd.context,
                                                 tenant_id=cmd.tenant_id)
    await write_audit(audit_record("code_generation", cmd.actor, tenant_id=cmd.tenant_id,
                                   target=cmd.component_type, detail=res.as_dict()),
                      A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")


# One handler per command type: a new kind is a new record in streams/commands.py and a line here
# (tests/unit/test_commands.py checks every kind has one).
HANDLERS: dict[type[CommandBase], Callable[[Any], Awaitable[object]]] = {
    TriggerCycle: start_cycle,
    Decision: decide,
    ResolveConflict: resolve_conflict,
    SetFlag: set_flag,
    GenerateComponent: generate_component,
}


async def handle_command(cmd: Command) -> None:
    await HANDLERS[type(cmd)](cmd)


async def _parse(value: bytes | None, partition: int, offset: int) -> Command | None:
    """The command; None for a bad one (dead-lettered) or a stale one (skipped)."""
    try:
        cmd = parse_command(value or b"")
    except BadRecord as exc:
        await dead_letter(T.COMMANDS, "command", exc.reason, exc.detail, value, partition, offset)
        return None
    age = (datetime.now(UTC) - cmd.timestamp).total_seconds()
    if age > A.settings.kaizen_command_max_age_seconds:
        # a request for "now": a new consumer group replaying old commands must not re-run them
        log.warning("stale command skipped", command=cmd.command_id, kind=cmd.kind, age_seconds=round(age))
        return None
    return cmd


async def _handle(cmd: Command, value: bytes | None, partition: int, offset: int) -> None:
    try:
        await handle_command(cmd)
    except Exception as exc:  # noqa: BLE001 - one failing command must not stop the agent
        log.exception("command failed", command=cmd.command_id, kind=cmd.kind)
        await dead_letter(T.COMMANDS, "command", f"{cmd.kind} command failed", f"{type(exc).__name__}: {exc}", value,
                          partition, offset)


# A cycle start may wait seconds for its evidence (CAUSE_SETTLE_SECONDS, the views catching up). Handled in
# line, every command behind it waited too: at a lab run's start kaizen's own connectors fired 23 self-healing
# cycles (5 s each), and the cycles of the tenants' faults queued behind them for 30 s. Cycle starts therefore
# run beside the stream, one at a time per tenant (cycles over all tenants have a queue of their own); other
# commands (decisions, flags) are handled in line. Each command is acknowledged once handled: Faust commits a
# partition's offset only up to its oldest command still being handled.
CYCLE_STARTS_IN_FLIGHT = 32
_tenant_queues: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # tenant -> (its turn, starts holding or waiting)


async def _start_in_turn(cmd: TriggerCycle, value: bytes | None, partition: int, offset: int) -> None:
    key = cmd.tenant_id or "*"
    lock, users = _tenant_queues.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            await _handle(cmd, value, partition, offset)
    finally:
        users[0] -= 1
        if not users[0]:  # nobody holds or waits for it: forgotten, so tenants seen once do not pile up
            del _tenant_queues[key]


@A.app.agent(A.commands_topic, name="commands")
async def commands(stream: faust.StreamT[bytes]) -> None:
    # A command is acknowledged once handled, not when it was read: a cycle may wait seconds for its
    # evidence, and a worker stopping in between (scale-in, a restart) cancels the handler. Acknowledged
    # on reading, its offset was committed on the way out and the command lost (a self-healing firing
    # whose cycle never started, depending on which worker owned the partition); unacknowledged, the
    # partition's next owner handles it again (cycle and improvement ids are derived from the command).
    manual = stream.noack()  # type: ignore[attr-defined]  # faust.Stream has it, StreamT does not declare it
    slots = asyncio.Semaphore(CYCLE_STARTS_IN_FLIGHT)
    starts: set[asyncio.Task[None]] = set()

    async def start_then_ack(cmd: TriggerCycle, event: Any) -> None:
        try:
            await _start_in_turn(cmd, event.value, event.message.partition, event.message.offset)
            await manual.ack(event)
        finally:
            slots.release()

    try:
        async for event in manual.events():
            msg = event.message
            cmd = await _parse(event.value, msg.partition, msg.offset)
            if isinstance(cmd, TriggerCycle):
                await slots.acquire()
                task = asyncio.create_task(start_then_ack(cmd, event))
                starts.add(task)
                task.add_done_callback(starts.discard)
                continue
            if cmd is not None:
                await _handle(cmd, event.value, msg.partition, msg.offset)
            await manual.ack(event)
    finally:  # the worker stops: cycle starts still choosing stop too, unacknowledged (handled again later)
        for task in list(starts):
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)


@A.app.timer(interval=1.0)
@survives_broker_outage
async def report_cycles() -> None:
    """Phase 6: once every improvement of a cycle reached a terminal status, publish its report."""
    if not _cycles:
        return
    ctx = await step_context()
    for cid, run in list(_cycles.items()):
        if not run.started:
            continue  # still choosing (waiting for the evidence to settle): not done with nothing started
        exs = [ctx.views.improvements.get(i) for i in run.improvement_ids]
        if any(e is None or not is_terminal(e.status) for e in exs):
            continue
        done = [e for e in exs if e is not None]
        assessments = [h.data["impact"] for e in done for h in e.history if "impact" in h.data]
        report = build_cycle_report(cid, run.kind, run.start, datetime.now(UTC), done,  # type: ignore[arg-type]
                                    opportunities_identified=run.opportunities_identified,
                                    assessments=assessments, tenant_id=run.tenant_id,
                                    telemetry_analyzed=since(run.telemetry_at_start,
                                                             current_totals(ctx.views.status)))
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
    slot_id = due(now, s.improvement_cycle_start_time, s.improvement_cycle_interval_hours,
                  ctx.views.config.get("cycles/last_scheduled", {}).get("slot"))
    if slot_id is None:
        return  # already run, or more than 5 minutes past the slot start (e.g. the worker just started)
    await A.config_topic.send(key=b"cycles/last_scheduled", value=orjson.dumps({"slot": slot_id}))
    ctx.views.config["cycles/last_scheduled"] = {"slot": slot_id}
    # the cycle looks back over its interval, at most over the longest window a cycle may have
    cmd = TriggerCycle(command_id=f"cmd-scheduled-{slot_id}", timestamp=now, actor="scheduler", roles=["system"],
                       cycle_kind="scheduled",
                       analysis_window_hours=min(s.improvement_cycle_interval_hours, MAX_WINDOW_HOURS))
    await A.commands_topic.send(key=b"scheduler", value=cmd.to_bytes())

