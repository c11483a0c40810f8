"""The `improvements.events` topic: one typed record per status family (a discriminated union on `status`).

Written by the improvement workers (agents/improvement/: cycle, steps, rollout, rollback, decisions) and
read by them (the fold into `improvements.state`) and by the MCP read model. Each status's `data` payload
is typed with what its producers write (docs/improvement-cycle.md, "Events"); every payload keeps keys
it does not know (producers add context over time, and old records must keep parsing), and every field is
optional unless each producer of that status has always written it. A record that parses as no status
raises BadRecord with a short reason (which field, what is wrong), for the dead-letter topic.

The fold works on the generic `streams.records.ImprovementEvent` (its `data` stays the dict the producer
wrote): `parse_improvement_event` checks the bytes against the union, then returns that record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streams.errors import BadRecord
from streams.records import ImprovementEvent, ImprovementOpportunity, Record


class Payload(BaseModel):
    """Base of every `data` payload: unknown keys are kept (never a reason to refuse an event)."""

    model_config = ConfigDict(extra="allow")


class AppliedChangeData(Payload):
    """One change an actuator applied (connectors/actuators/base.py AppliedChange.as_dict)."""

    key: str
    previous: str | None = None
    new: str | None = None
    fingerprint: str | None = None
    improvement_id: str | None = None
    target: str | None = None
    version: str | None = None
    noop: bool = False
    actuator: str = ""


class Deployment(Payload):
    """Where the change is live: the stage and the changes of each rollout step."""

    stage: str | None = None  # canary | full | recovered (a journal recovery after a lost state)
    canary: list[AppliedChangeData] = []
    full: list[AppliedChangeData] = []
    started_at: float | None = None
    stage_started_at: float | None = None
    actuator: str | None = None
    canary_verdict: str | None = None


class Approval(Payload):
    """The guardrails' decision (status, reasons) or a person's approval (status approved, by)."""

    status: str
    reasons: list[str] = []
    by: str | None = None


class RollbackReport(Payload):
    """What the rollback phase did: keys undone and verified, keys left as someone else set them."""

    undone: list[str] = []
    conflicts: list[str] = []
    retries: int = 0
    verified: bool = True
    at: float | None = None


class Resolution(Payload):
    """A person's resolution of a `conflict` (streams/commands.py ResolveConflict)."""

    action: Literal["retry_rollback", "keep_current"]
    by: str
    command_id: str | None = None


class StateFields(Payload):
    """Keys the fold copies onto the improvement's state in any status: their types must hold everywhere."""

    plan: dict[str, Any] | None = None
    generated_code: dict[str, str] | None = None
    validation: dict[str, Any] | None = None
    deployment: Deployment | None = None
    baseline: dict[str, float] | None = None
    monitoring_metrics: dict[str, list[float]] | None = None
    verdict: str | None = None
    degradation: float | None = None
    requested_by: str | None = None


class PendingData(StateFields):
    """A cycle picked an opportunity (agents/improvement/cycle.py)."""

    opportunity: ImprovementOpportunity | None = None
    cycle_kind: str | None = None
    healing: dict[str, Any] | None = None


class ProgressData(StateFields):
    """queued, generating, deferred: a reason is all they carry."""


class ValidatingData(StateFields):
    """The plan (and generated code, with the generation's usage) to validate."""

    generation: dict[str, Any] | None = None


class DecidedData(StateFields):
    """awaiting_approval / deploying: the validation result and the guardrails' or a person's approval."""

    approval: Approval | None = None


class RollbackData(StateFields):
    """rolling_back: the verdict that started it (with its impact assessment), a recovered deployment,
    or a person's retry after a conflict."""

    assessment: dict[str, Any] | None = None
    resolution: Resolution | None = None


class ConflictData(StateFields):
    """conflict: the targets someone else changed since kaizen wrote them (left as they set them)."""

    conflicts: list[str]
    rollback: RollbackReport | None = None
    assessment: dict[str, Any] | None = None


class OutcomeData(StateFields):
    """completed, rolled_back, failed, rejected: the verdict, impact, rollback report, a resolution."""

    impact: dict[str, Any] | None = None
    rollback: RollbackReport | None = None
    approval: Approval | None = None
    generation: dict[str, Any] | None = None
    resolution: Resolution | None = None


class EventBase(Record):
    """The envelope every improvement event has (streams/records.py ImprovementEvent)."""

    event_id: str = Field(min_length=1)
    improvement_id: str = Field(min_length=1)
    timestamp: datetime
    actor: str = "kaizen"
    reason: str = ""
    cycle_id: str | None = None
    tenant_id: str = ""


class PendingEvent(EventBase):
    status: Literal["pending"]
    data: PendingData = PendingData()


class ProgressEvent(EventBase):
    status: Literal["queued", "generating", "deferred"]
    data: ProgressData = ProgressData()


class ValidatingEvent(EventBase):
    status: Literal["validating"]
    data: ValidatingData = ValidatingData()


class DecidedEvent(EventBase):
    status: Literal["awaiting_approval", "deploying"]
    data: DecidedData = DecidedData()


class MonitoringEvent(EventBase):
    status: Literal["monitoring"]
    data: StateFields = StateFields()


class RollingBackEvent(EventBase):
    status: Literal["rolling_back"]
    data: RollbackData = RollbackData()


class ConflictEvent(EventBase):
    status: Literal["conflict"]
    data: ConflictData


class OutcomeEvent(EventBase):
    status: Literal["completed", "rolled_back", "failed", "rejected"]
    data: OutcomeData = OutcomeData()


TypedEvent = Annotated[PendingEvent | ProgressEvent | ValidatingEvent | DecidedEvent | MonitoringEvent
                       | RollingBackEvent | ConflictEvent | OutcomeEvent, Field(discriminator="status")]
EVENT_TYPES: tuple[type[EventBase], ...] = (PendingEvent, ProgressEvent, ValidatingEvent, DecidedEvent,
                                            MonitoringEvent, RollingBackEvent, ConflictEvent, OutcomeEvent)
_ADAPTER: TypeAdapter[TypedEvent] = TypeAdapter(TypedEvent)


def _reason(exc: ValidationError, limit: int = 5) -> str:
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or '<record>'}: {e.get('msg', 'invalid')}"
             for e in exc.errors()[:limit]]
    return "; ".join(parts)


def typed_event(data: bytes | str | dict[str, Any]) -> TypedEvent:
    """The typed record of an `improvements.events` value; BadRecord (reason: what is wrong) when it is none."""
    try:
        return _ADAPTER.validate_python(data) if isinstance(data, dict) else _ADAPTER.validate_json(data)
    except ValidationError as exc:
        types = {e.get("type") for e in exc.errors()}
        if "union_tag_not_found" in types:
            raise BadRecord("improvement event without a status") from exc
        if "union_tag_invalid" in types:
            tag = next((e.get("ctx", {}).get("tag") for e in exc.errors() if e.get("type") == "union_tag_invalid"),
                       "?")
            raise BadRecord(f"unknown improvement status '{tag}'") from exc
        if all(not e.get("loc") for e in exc.errors()):  # the value as a whole: not JSON, or not an object
            raise BadRecord("improvement event is not a JSON object", str(exc.errors()[0].get("msg", ""))) from exc
        raise BadRecord("malformed improvement event", _reason(exc)) from exc


def parse_improvement_event(data: bytes | str) -> ImprovementEvent:
    """Check an `improvements.events` value against the union; the generic record the fold works on."""
    typed_event(data)
    return ImprovementEvent.model_validate_json(data)


def check_event(event: ImprovementEvent) -> TypedEvent:
    """The typed record of an event built in process (a producer's output): BadRecord when it is malformed."""
    return typed_event(event.model_dump(mode="json"))
