"""What a permitted approve / reject / defer / resolve_conflict does to an improvement: the events it produces."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agents.improvement.logic.lifecycle import fold, next_event
from streams.commands import Decision, DecisionKind, ResolveConflict
from streams.records import ImprovementEvent, ImprovementExecution


def _reject(cmd: Decision, ex: ImprovementExecution, now: datetime) -> list[ImprovementEvent]:
    return [next_event(ex, "rejected", now, actor=cmd.actor, reason=cmd.reason_or_default())]


def _defer(cmd: Decision, ex: ImprovementExecution, now: datetime) -> list[ImprovementEvent]:
    return [next_event(ex, "deferred", now, actor=cmd.actor, reason=cmd.reason_or_default())]


def _approve(cmd: Decision, ex: ImprovementExecution, now: datetime) -> list[ImprovementEvent]:
    approval = {"approval": {"status": "approved", "by": cmd.actor}}
    events: list[ImprovementEvent] = []
    if ex.status == "deferred":  # approving a deferred improvement re-opens it first
        events.append(next_event(ex, "awaiting_approval", now, actor=cmd.actor, reason="un-deferred"))
        ex = fold(ex, events[0])
    events.append(next_event(ex, "deploying", now, actor=cmd.actor, reason=cmd.reason_or_default(), data=approval))
    return events


DECISION_EVENTS: dict[DecisionKind, Callable[[Decision, ImprovementExecution, datetime], list[ImprovementEvent]]] = {
    "approve": _approve,
    "reject": _reject,
    "defer": _defer,
}


def decision_events(cmd: Decision, ex: ImprovementExecution, now: datetime) -> list[ImprovementEvent]:
    """The events of a decision already allowed by streams/decisions.py `refusal()`."""
    return DECISION_EVENTS[cmd.kind](cmd, ex, now)


# what a retried rollback carries over from the rollback that met the conflict (its outcome reports it)
_CARRIED = ("verdict", "degradation", "monitoring_metrics", "assessment")


def resolution_events(cmd: ResolveConflict, ex: ImprovementExecution, now: datetime) -> list[ImprovementEvent]:
    """A conflict resolved (already allowed by streams/decisions.py `refusal()`): `retry_rollback` starts
    the rollback again (rolling_back; it still never overwrites a value someone else set), `keep_current`
    ends the improvement `rejected`, the values someone else set left as they are (kaizen's own changes
    still in place are undone by the journal reconciliation, agents/improvement/rollback.py)."""
    resolution = {"resolution": {"action": cmd.action, "by": cmd.actor, "command_id": cmd.command_id}}
    if cmd.action == "keep_current":
        return [next_event(ex, "rejected", now, actor=cmd.actor, reason=cmd.reason_or_default(), data=resolution)]
    started = next((h for h in reversed(ex.history) if h.status == "rolling_back"), None)
    carried = {k: v for k, v in (started.data if started else {}).items() if k in _CARRIED}
    return [next_event(ex, "rolling_back", now, actor=cmd.actor, reason=cmd.reason_or_default(),
                       data={**carried, **resolution})]
