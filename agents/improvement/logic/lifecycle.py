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
# -> monitoring -> completed | rolled_back.  failed/rejected from any non-terminal status,
# deferred <-> awaiting_approval.  A non-terminal status may repeat (an update event: e.g. a
# monitoring check carrying new samples) without changing the status.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"queued", "generating"}),
    "queued": frozenset({"generating"}),
    "generating": frozenset({"validating"}),
    "validating": frozenset({"awaiting_approval", "deploying"}),
    "awaiting_approval": frozenset({"deploying", "deferred"}),
    "deferred": frozenset({"awaiting_approval"}),
    "deploying": frozenset({"monitoring", "rolled_back"}),
    "monitoring": frozenset({"completed", "rolled_back"}),
    "completed": frozenset(),
    "rolled_back": frozenset(),
    "failed": frozenset(),
    "rejected": frozenset(),
}
ALWAYS_ALLOWED_FROM_NON_TERMINAL: frozenset[str] = frozenset({"failed", "rejected"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"generating", "validating", "deploying", "monitoring"})

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
    if new == current or new in ALWAYS_ALLOWED_FROM_NON_TERMINAL:
        return True
    return new in TRANSITIONS.get(current, frozenset())


def event_id_for(improvement_id: str, status: str, sequence: int) -> str:
    """Deterministic event id: the same step of the same improvement always gets the same id."""
    return f"{improvement_id}:{status}:{sequence}"


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
        sequence=len(execution.history), cycle_id=execution.cycle_id, tenant_id=execution.tenant_id,
    )


def _start(event: ImprovementEvent) -> ImprovementExecution:
    if event.status != "pending":
        raise IllegalTransition(
            f"improvement {event.improvement_id}: first event must be 'pending', got {event.status!r}"
        )
    opp_raw = event.data.get("opportunity")
    opportunity = ImprovementOpportunity.model_validate(opp_raw) if opp_raw is not None else None
    tenant = event.tenant_id or (opportunity.tenant_id if opportunity else "")
    return ImprovementExecution(
        improvement_id=event.improvement_id,
        opportunity=opportunity,
        status="pending",
        cycle_id=event.cycle_id,
        tenant_id=tenant,
        requested_by=str(event.data.get("requested_by", event.actor)),
        created_at=event.timestamp,
    )


def fold(execution: ImprovementExecution | None, event: ImprovementEvent) -> ImprovementExecution:
    """Apply one event to the state.  Idempotent: an event already folded is ignored; an illegal
    transition raises IllegalTransition (the state is left untouched)."""
    if execution is not None and event.improvement_id != execution.improvement_id:
        raise IllegalTransition(
            f"event {event.event_id} is for {event.improvement_id}, not {execution.improvement_id}"
        )
    if execution is not None and any(h.event_id == event.event_id for h in execution.history):
        return execution
    if execution is None:
        state = _start(event)
    else:
        if not allowed(execution.status, event.status):
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
    if event.status == "rolled_back":
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
