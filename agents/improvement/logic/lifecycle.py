"""The improvement lifecycle: legal status transitions and the idempotent fold of events into state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.errors import ConflictError
from streams.records import (
    TERMINAL_STATUSES,
    ImprovementEvent,
    ImprovementExecution,
    ImprovementOpportunity,
    ImprovementStatus,
)

# Forward path: pending -> queued/generating -> validating -> awaiting_approval/deploying
# -> monitoring -> completed | rolling_back -> rolled_back.  Once a change may be applied (deploying,
# monitoring) the only way out other than `completed` is `rolling_back`, which ends `rolled_back`
# (or `failed`: undone, but the improvement failed) once every target is verified back, or pauses as
# `conflict` when a target was changed by someone else (a person decides: retry the rollback, or
# give up leaving the targets as they are).  failed/rejected are allowed from any status where
# nothing can be applied; deferred <-> awaiting_approval.  A non-terminal status may repeat (an
# update event) without changing the status.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"queued", "generating"}),
    "queued": frozenset({"generating"}),
    "generating": frozenset({"validating"}),
    "validating": frozenset({"awaiting_approval", "deploying"}),
    "awaiting_approval": frozenset({"deploying", "deferred"}),
    "deferred": frozenset({"awaiting_approval"}),
    "deploying": frozenset({"monitoring", "rolling_back", "conflict"}),
    "monitoring": frozenset({"completed", "rolling_back", "conflict"}),
    "rolling_back": frozenset({"rolled_back", "failed", "conflict"}),
    "conflict": frozenset({"rolling_back", "failed", "rejected"}),
    "completed": frozenset(),
    "rolled_back": frozenset(),
    "failed": frozenset(),
    "rejected": frozenset(),
}
ALWAYS_ALLOWED_FROM_NON_TERMINAL: frozenset[str] = frozenset({"failed", "rejected"})
# Statuses in which changes may be applied: leaving them other than through TRANSITIONS would abandon them.
APPLIED_STATUSES: frozenset[str] = frozenset({"deploying", "monitoring", "rolling_back", "conflict"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"generating", "validating", "deploying", "monitoring", "rolling_back"})
# How far along the lifecycle a status is: an event after a gap may only move forward.
_RANK: dict[str, int] = {"pending": 0, "queued": 1, "generating": 2, "validating": 3, "awaiting_approval": 4,
                         "deferred": 4, "deploying": 5, "monitoring": 6, "rolling_back": 7, "conflict": 7,
                         "completed": 8, "rolled_back": 8, "failed": 8, "rejected": 8}

# event.data keys copied onto the execution (the event is the only writer of these fields)
_DATA_FIELDS = (
    "plan", "generated_code", "validation", "deployment", "baseline", "monitoring_metrics",
    "verdict", "degradation", "requested_by",
)


class IllegalTransition(ConflictError, ValueError):
    """An event asks for a status change the lifecycle does not allow."""


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def allowed(current: str, new: str) -> bool:
    """True when `current -> new` is a legal transition (or a same-status update of a live improvement)."""
    if is_terminal(current):
        return False
    if new == current:
        return True
    if new in ALWAYS_ALLOWED_FROM_NON_TERMINAL and current not in APPLIED_STATUSES:
        return True
    return new in TRANSITIONS.get(current, frozenset())


def event_id_for(improvement_id: str, status: str, sequence: int) -> str:
    """Deterministic event id: the same step of the same improvement always gets the same id."""
    return f"{improvement_id}:{status}:{sequence}"


def sequence_of(event_id: str) -> int | None:
    """The sequence number in an id built by event_id_for (None for an id of another shape)."""
    _, _, tail = event_id.rpartition(":")
    return int(tail) if tail.isdigit() else None


def next_sequence(execution: ImprovementExecution) -> int:
    """The sequence of the execution's next event: after the last folded one, even across a gap."""
    last = sequence_of(execution.last_event_id) if execution.last_event_id else None
    return max(len(execution.history), (last + 1) if last is not None else 0)


def is_gap(execution: ImprovementExecution | None, event: ImprovementEvent) -> bool:
    """True when events between the state and `event` are missing (lost with a reset broker or topic):
    the event's sequence is beyond the next one expected."""
    seq = sequence_of(event.event_id)
    return seq is not None and seq > (0 if execution is None else next_sequence(execution))


def new_event(
    improvement_id: str,
    status: ImprovementStatus,
    now: datetime,
    actor: str = "kaizen",
    reason: str = "",
    data: dict[str, Any] | None = None,
    sequence: int = 0,
    cycle_id: str | None = None,
    tenant_id: str = "",
) -> ImprovementEvent:
    """Build an event; `sequence` is the number of events already folded (see `next_event`)."""
    return ImprovementEvent(
        event_id=event_id_for(improvement_id, status, sequence),
        improvement_id=improvement_id,
        status=status,
        timestamp=now,
        actor=actor,
        reason=reason,
        cycle_id=cycle_id,
        tenant_id=tenant_id,
        data=dict(data or {}),
    )


def next_event(
    execution: ImprovementExecution,
    status: ImprovementStatus,
    now: datetime,
    actor: str = "kaizen",
    reason: str = "",
    data: dict[str, Any] | None = None,
) -> ImprovementEvent:
    """The next event of an execution; its id depends only on the state, so a re-run after a crash
    produces the same id and the fold ignores the duplicate."""
    return new_event(
        execution.improvement_id, status, now, actor, reason, data,
        sequence=next_sequence(execution), cycle_id=execution.cycle_id, tenant_id=execution.tenant_id,
    )


def _start(event: ImprovementEvent) -> ImprovementExecution:
    """The state an improvement's first seen event opens: `pending`, or, after a gap (the events before
    it were lost), the event's own status, so a change still applied is watched or undone, not orphaned."""
    if event.status != "pending" and not is_gap(None, event):
        raise IllegalTransition(
            f"improvement {event.improvement_id}: first event must be 'pending', got {event.status!r}"
        )
    opp_raw = event.data.get("opportunity")
    opportunity = ImprovementOpportunity.model_validate(opp_raw) if opp_raw is not None else None
    tenant = event.tenant_id or (opportunity.tenant_id if opportunity else "")
    return ImprovementExecution(
        improvement_id=event.improvement_id,
        opportunity=opportunity,
        status=event.status,
        cycle_id=event.cycle_id,
        tenant_id=tenant,
        requested_by=str(event.data.get("requested_by", event.actor)),
        created_at=event.timestamp,
    )


def fold(execution: ImprovementExecution | None, event: ImprovementEvent) -> ImprovementExecution:
    """Apply one event to the state.  Idempotent: an event already folded is ignored (a replay); an
    illegal transition raises IllegalTransition (the state is left untouched).  Gaps are tolerated: an
    event whose sequence shows that events before it are missing may move the state forward past the
    missing steps (never back), and may open the state of an improvement whose start was lost."""
    if execution is not None and event.improvement_id != execution.improvement_id:
        raise IllegalTransition(
            f"event {event.event_id} is for {event.improvement_id}, not {execution.improvement_id}"
        )
    if execution is not None and any(h.event_id == event.event_id for h in execution.history):
        return execution
    if execution is None:
        state = _start(event)
    else:
        jump = is_gap(execution, event) and _RANK.get(event.status, 0) >= _RANK.get(execution.status, 0) \
            and not is_terminal(execution.status)
        if not jump and not allowed(execution.status, event.status):
            raise IllegalTransition(
                f"improvement {execution.improvement_id}: {execution.status} -> {event.status} is not allowed"
                + (" (terminal)" if is_terminal(execution.status) else "")
            )
        state = execution.model_copy()  # shallow: fields are replaced, never mutated in place
        state.status = event.status
    for name in _DATA_FIELDS:
        if name in event.data:
            setattr(state, name, event.data[name])
    if event.cycle_id and not state.cycle_id:
        state.cycle_id = event.cycle_id
    if event.status == "monitoring" and state.deployment_time is None:
        state.deployment_time = event.timestamp
    if event.status in ("rolling_back", "rolled_back"):
        state.rollback_triggered = True
    if is_terminal(event.status):
        state.completion_time = event.timestamp
    state.updated_at = event.timestamp
    state.history = [*state.history, event]
    state.last_event_id = event.event_id
    return state


def fold_all(events: list[ImprovementEvent]) -> dict[str, ImprovementExecution]:
    """Fold a sequence of events (possibly of many improvements, with duplicates) into states."""
    states: dict[str, ImprovementExecution] = {}
    for event in events:
        states[event.improvement_id] = fold(states.get(event.improvement_id), event)
    return states
