"""Improvement agent: folds improvements.events into ImprovementExecution and runs each next phase."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from pydantic import ValidationError

from agents.audit import audit_record, write_audit
from agents.deadletter import dead_letter
from agents.healing.executions import measured_step
from agents.improvement import rollback, steps
from agents.improvement.context import StepContext, step_context
from agents.improvement.logic.lifecycle import (
    ACTIVE_STATUSES,
    APPLIED_STATUSES,
    IllegalTransition,
    fold,
    is_terminal,
    next_event,
)
from agents.improvement.logic.replay import ReplayGate
from streams import app as A
from streams import epoch
from streams.commits import CaughtUp
from streams.errors import BadRecord
from streams.improvement_events import parse_improvement_event
from streams.metrics import ACTIVE_IMPROVEMENTS, IMPROVEMENTS_DEPLOYED, IMPROVEMENTS_ROLLED_BACK
from streams.records import ImprovementEvent, ImprovementExecution, ImprovementStatus, TelemetryInsight
from streams.runtime import survives_broker_outage
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)
RESUME_AFTER_SECONDS = 3.0  # an improvement idle this long with no running task is resumed (after a crash)
EMITTED_GRACE_SECONDS = 30.0  # a step that emitted its outcome is not re-run meanwhile: the outcome is on its way
STATS: dict[str, int] = defaultdict(int)

_store: dict[str, ChangelogStore[dict[str, Any]]] = {}
_tasks: dict[str, asyncio.Task[None]] = {}
_emitted: dict[str, tuple[str | None, float]] = {}  # improvement -> (state its step ran from, when it emitted)
# A group reading the topic from its start (a new app id) must not re-run the steps it folds (logic/replay.py).
_replay = ReplayGate(started_at=time.time())
_ends = CaughtUp(A.app)  # only its caught_up(): whether an event is the last its partition holds


async def store() -> ChangelogStore[dict[str, Any]]:
    s = _store.get("s")
    if s is None:
        s = _store["s"] = await start_agent_store("improvements", A.improvement_events_topic.get_topic_name())
    return s


async def emit(events: list[ImprovementEvent]) -> None:
    for ev in events:
        await A.improvement_events_topic.send(key=ev.improvement_id.encode(), value=ev.to_bytes())


def _max_concurrent(tenant: str) -> int:
    return int(A.settings.tenant_profile(tenant).get("max_concurrent", A.settings.max_concurrent_improvements))


async def _admit(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """pending/queued: start generating when capacity allows (MAX_CONCURRENT_IMPROVEMENTS), else queue."""
    active = [o for o in ctx.views.active(ACTIVE_STATUSES) if o.improvement_id != ex.improvement_id]
    limit = min(_max_concurrent(ex.tenant_id), A.settings.max_concurrent_improvements)
    if len(active) < limit:
        return [next_event(ex, "generating", datetime.now(UTC), reason="capacity available")]
    if ex.status == "pending":
        return [next_event(ex, "queued", datetime.now(UTC),
                           reason=f"{len(active)} improvements active (MAX_CONCURRENT_IMPROVEMENTS={limit})")]
    return []  # queued: stay queued; the supervisor retries when capacity frees


async def _monitor(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """monitoring: check every MONITORING_CHECK_INTERVAL_SECONDS until a check decides."""
    while not (events := await steps.monitor_once(ctx, ex)):
        await asyncio.sleep(A.settings.monitoring_check_interval_seconds)
    return events


Step = Callable[[StepContext, ImprovementExecution], Awaitable[list[ImprovementEvent]]]
# The phase each status runs; a status not here waits for a person or is terminal.
STEPS: dict[str, Step] = {
    "pending": _admit,
    "queued": _admit,
    "generating": steps.step_generating,
    "validating": steps.step_validating,
    "deploying": steps.step_deploying,
    "monitoring": _monitor,
    "rolling_back": rollback.step_rolling_back,
}
RUNNABLE = frozenset(STEPS)
# Status changes written to the audit trail, and the action they are audited as.
AUDITED: dict[str, str] = {"monitoring": "deployment", "rolled_back": "rollback", "rolling_back": "rollback_started",
                           "conflict": "improvement_conflict",
                           **{s: f"improvement_{s}" for s in ("completed", "awaiting_approval", "rejected", "failed")}}


async def _run_step(ex: ImprovementExecution) -> None:
    """Run the phase the improvement is in and emit what it decides."""
    step = STEPS.get(ex.status)
    if step is not None:
        events = await measured_step(ex.status, step(await step_context(), ex))  # docs/healing.md
        await emit(events)
        if events:
            _emitted[ex.improvement_id] = (ex.last_event_id, time.monotonic())


def _launch(ex: ImprovementExecution) -> None:
    running = _tasks.get(ex.improvement_id)
    if running is not None and not running.done():
        running.cancel()  # the state moved on: the old step is obsolete

    async def _guarded() -> None:
        try:
            await _run_step(ex)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing step fails its improvement, never the agent
            log.exception("improvement step failed", improvement=ex.improvement_id, status=ex.status)
            if ex.status == "rolling_back":
                return  # never given up: the supervisor resumes it after RESUME_AFTER_SECONDS
            # once changes may be applied, a failing step undoes them (rolling_back), never abandons them
            status: ImprovementStatus = "rolling_back" if ex.status in APPLIED_STATUSES else "failed"
            with contextlib.suppress(IllegalTransition):
                await emit([next_event(ex, status, datetime.now(UTC), reason=f"{ex.status} step error: {exc}",
                                       data={"verdict": "error"} if status == "rolling_back" else {})])

    _tasks[ex.improvement_id] = asyncio.create_task(_guarded())


async def _after_terminal(ex: ImprovementExecution) -> None:
    """Outcome → opportunity (learning), metrics, audit."""
    outcome = {"completed": "kept", "rolled_back": "rolled_back"}.get(ex.status, "failed")
    if ex.status == "completed" and ex.verdict != "keep":
        outcome = "failed"
    if ex.opportunity is not None and ex.status != "rejected":
        opp = ex.opportunity
        ins = TelemetryInsight(
            insight_type="improvement_outcome", severity="low", affected_component=opp.affected_components[0]
            if opp.affected_components else "default", affected_tenants=opp.affected_tenants,
            tenant_id=opp.tenant_id, problem_type=opp.problem_type, confidence_score=1.0,
            timestamp=ex.completion_time or datetime.now(UTC), source="improvements",
            description=f"improvement {ex.improvement_id} {ex.status}",
            evidence={"opportunity_id": opp.opportunity_id, "outcome": outcome, "improvement_id": ex.improvement_id},
            insight_id=f"outcome-{ex.improvement_id}")
        from agents.routing import partition_of

        await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                    partition=partition_of(opp.opportunity_id, A.settings.kafka_topic_partitions))
    if ex.status == "rolled_back":
        IMPROVEMENTS_ROLLED_BACK.inc()


async def handle_event(partition: int, ev: ImprovementEvent, launch: bool = True) -> ImprovementExecution | None:
    """Fold one event; with `launch`, start the step of the status it leads to (without, the supervisor
    resumes it once the partition has caught up)."""
    s = await store()
    book = await s.state(partition)
    raw = book.get(ev.improvement_id)
    cur = ImprovementExecution.model_validate(raw) if raw is not None else None
    try:
        new = fold(cur, ev)
    except IllegalTransition as exc:
        log.warning("event ignored", improvement=ev.improvement_id, error=str(exc))
        STATS["illegal"] += 1
        return None
    if cur is not None and new is cur:
        return None  # a duplicate (replayed) event
    # Durable before the event's offset can be committed: a SIGKILL must not leave the state behind the log.
    # The wait is bounded (streams/state.py DELIVERY_TIMEOUT_SECONDS): a write the broker does not acknowledge
    # raises ChangelogWriteTimeout, logged with what the producer knows of the partition; this agent crashes
    # and Faust restarts it once its commit's producer flush returns (the supervisor below resumes the step),
    # instead of waiting here without an error and processing nothing more.
    await s.record(partition, {"set": {new.improvement_id: new.model_dump(mode="json")}}, wait=True)
    await A.improvement_state_topic.send(key=new.improvement_id.encode(), value=new.to_bytes())
    ctx = await step_context()
    ctx.views.improvements[new.improvement_id] = new
    STATS[new.status] += 1
    if new.status == "monitoring" and (cur is None or cur.status != "monitoring"):
        IMPROVEMENTS_DEPLOYED.inc()
    action = AUDITED.get(new.status)
    if action is not None and (cur is None or cur.status != new.status):
        # Stamped with the event's time, so the record (and its id) is the same whoever folds the event: a
        # new consumer group reading the topic back, or the next owner of a partition, re-writes an audit
        # record a reader can tell is already there, dated when the change happened, not when it was re-read.
        await write_audit(audit_record(action, ev.actor, tenant_id=new.tenant_id, target=new.improvement_id,
                                       now=ev.timestamp,
                                       detail={"reason": ev.reason, "status": new.status, **{
                                           k: ev.data[k] for k in ("deployment", "verdict", "degradation",
                                                                   "rollback", "approval", "conflicts",
                                                                   "resolution")
                                           if k in ev.data}}),
                          A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")
    ACTIVE_IMPROVEMENTS.set(len(ctx.views.active(ACTIVE_STATUSES)))
    if is_terminal(new.status):
        _emitted.pop(new.improvement_id, None)
        task = _tasks.pop(new.improvement_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await _after_terminal(new)
    elif new.status in RUNNABLE and (cur is None or cur.status != new.status or new.status != "monitoring"
                                     or ev.data.get("deployment") is not None):
        if launch:
            _launch(new)
        else:  # read back, not live: the step of a state that moved on stops; the supervisor resumes later
            task = _tasks.pop(new.improvement_id, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
    return new


@A.app.agent(A.improvement_events_topic, name="improvements")
async def improvements(stream: faust.StreamT[bytes]) -> None:
    await store()
    await step_context()
    async for event in stream.events():
        try:  # checked against the typed union (streams/improvement_events.py) at the boundary
            ev = parse_improvement_event(event.value or b"")
        except BadRecord as exc:
            await dead_letter(A.improvement_events_topic.get_topic_name(), "improvement_event", exc.reason,
                              exc.detail, event.value, event.message.partition, event.message.offset)
            continue
        msg = event.message
        launch = _replay.on_event(msg.partition, _ends.caught_up(msg.tp, msg.offset), ev.timestamp.timestamp(),
                                  time.monotonic())
        try:
            await handle_event(msg.partition, ev, launch=launch)
        except ValidationError as exc:  # e.g. a pending event whose opportunity is no opportunity
            await dead_letter(A.improvement_events_topic.get_topic_name(), "improvement_event",
                              "improvement event does not fold", str(exc), event.value, event.message.partition,
                              event.message.offset)


@A.app.timer(interval=1.0)
@survives_broker_outage
async def supervise_improvements() -> None:
    """Load the state of assigned partitions; resume improvements whose step died with a worker, and
    admit queued ones when capacity frees (MAX_CONCURRENT_IMPROVEMENTS)."""
    s = _store.get("s")
    if s is None:
        return
    topic = A.improvement_events_topic.get_topic_name()
    try:
        assigned = {tp.partition for tp in A.app.consumer.assignment() if tp.topic == topic}
    except (AttributeError, RuntimeError):
        return
    now = time.time()
    _replay.keep_only(assigned)
    for p in sorted(assigned):
        if _replay.behind(p, time.monotonic()):
            continue  # read back from its start: nothing of it is resumed before it has caught up
        book = await s.state(p)
        queued: list[ImprovementExecution] = []
        for raw in list(book.values()):
            ex = ImprovementExecution.model_validate(raw)
            if ex.status not in RUNNABLE:
                continue
            task = _tasks.get(ex.improvement_id)
            if task is not None and not task.done():
                continue
            idle = now - (ex.updated_at.timestamp() if ex.updated_at else 0.0)
            ran_from, at = _emitted.get(ex.improvement_id, (None, 0.0))
            if ran_from == ex.last_event_id and time.monotonic() - at < EMITTED_GRACE_SECONDS:
                continue  # its step emitted the next event, not folded yet: re-running it would race it
            if ex.status == "queued":
                queued.append(ex)
            elif idle >= RESUME_AFTER_SECONDS:
                log.info("resuming improvement", improvement=ex.improvement_id, status=ex.status)
                _launch(ex)
        for ex in sorted(queued, key=lambda e: e.created_at or datetime.now(UTC))[:1]:
            _launch(ex)
    await _reconcile(s, assigned)


_reconciler: dict[str, rollback.Reconciler] = {}


def reconcile_soon(_report: dict[str, Any] | None = None) -> None:
    """For whoever detects a broker or topic reset: reconcile the applied-changes journal at once."""
    _reconciler.setdefault("r", rollback.Reconciler()).soon()


# a reset noticed by this process (agents/status.py checks the broker epoch) reconciles at the next tick
epoch.on_reset(reconcile_soon)


async def _reconcile(s: ChangelogStore[dict[str, Any]], assigned: set[int]) -> None:
    """Every applied change in the journal belongs to a live improvement, or is undone (rollback.py)."""
    rec = _reconciler.setdefault("r", rollback.Reconciler())
    if not rec.due(time.monotonic()):
        return
    books = [await s.state(p) for p in sorted(assigned)]
    ctx = await step_context()

    def known(imp: str) -> ImprovementExecution | None:
        for book in books:
            if imp in book:
                return ImprovementExecution.model_validate(book[imp])
        return ctx.views.improvements.get(imp)

    await emit(await rec.run(ctx, known))
