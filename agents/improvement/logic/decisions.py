"""What a permitted approve / reject / defer does to an improvement: the lifecycle events it produces."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from agents.improvement.logic.lifecycle import fold, next_event
from streams.commands import Decision, DecisionKind
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
