"""The `commands` topic: one typed record per command kind (a discriminated union on `kind`), parsed once.

Written by the MCP server, the scheduler, the events agent (emergency cycles) and the demo; read by the
improvement workers (agents/improvement/cycle.py), which dispatch on the record's type.  Each command's
defaults live here and nowhere else.

Wire format: a flat JSON object, `{"kind": ..., "command_id", "timestamp", "actor", "roles", "tenant_id",
<the kind's fields>}`.  Records written before the union (their fields nested under `args`) still parse:
`args` is lifted to the top level (a top-level field wins).  A record that parses as no kind raises
BadRecord with a short reason, for the dead-letter topic.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from streams.errors import BadRecord
from streams.records import ImprovementOpportunity, Record

DEFAULT_WINDOW_HOURS = 24
MAX_WINDOW_HOURS = 720  # 30 days
COMPONENT_TYPES: tuple[str, ...] = ("skill", "agent", "service")
CycleKind = Literal["manual", "scheduled", "emergency"]
DecisionKind = Literal["approve", "reject", "defer"]
DECISION_KINDS: tuple[DecisionKind, ...] = ("approve", "reject", "defer")


class CommandBase(Record):
    """Who asks (actor and the roles the sender vouches for), when, and for which tenant (None = all)."""

    command_id: str = Field(min_length=1)
    timestamp: datetime
    actor: str = Field(min_length=1)
    roles: list[str] = []
    tenant_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_args(cls, data: Any) -> Any:
        """Records written before the typed union nested the kind's fields under `args`."""
        if isinstance(data, dict) and "args" in data:
            args = data["args"]
            if not isinstance(args, dict):
                raise ValueError(f"args must be an object, got {type(args).__name__}")
            data = {**args, **{k: v for k, v in data.items() if k != "args"}}
        return data


class TriggerCycle(CommandBase):
    """Start an improvement cycle over the opportunities seen in the last `analysis_window_hours`."""

    kind: Literal["trigger_cycle"] = "trigger_cycle"
    cycle_id: str | None = None  # named by the sender (MCP) so it can follow the cycle; else derived
    cycle_kind: CycleKind = "manual"
    analysis_window_hours: float = Field(DEFAULT_WINDOW_HOURS, gt=0, le=MAX_WINDOW_HOURS)
    max_improvements: int | None = Field(None, ge=1)  # None: MAX_CONCURRENT_IMPROVEMENTS
    component: str | None = None  # focus the cycle on one component's opportunities ...
    problem_type: str | None = None  # ... that problem type first
    alarm_event_id: str | None = None  # emergency cycles: the alarm that asked for it
    alarm_at: datetime | None = None
    # self-healing cycles (docs/healing.md): the firing answered, the action's change hint, and the
    # opportunity worked on when none of that problem type is open for the component
    healing: dict[str, Any] | None = None
    change_hint: dict[str, Any] = {}
    opportunity: ImprovementOpportunity | None = None

    def resolved_cycle_id(self) -> str:
        """The sender's cycle id, or one derived from the command id (a re-delivery gets the same)."""
        return self.cycle_id or "cycle-" + hashlib.sha1(self.command_id.encode()).hexdigest()[:16]

    def improvements_cap(self, max_concurrent: int) -> int:
        """How many improvements this cycle may start: its own cap, else MAX_CONCURRENT_IMPROVEMENTS."""
        return self.max_improvements if self.max_improvements is not None else max(1, max_concurrent)


class Decision(CommandBase):
    """approve / reject / defer one improvement; who may is decided by streams/decisions.py."""

    kind: DecisionKind
    improvement_id: str = Field(min_length=1)
    reason: str = ""
    all_tenants: bool = False  # the deciding principal covers every tenant (needed for system-wide changes)

    def reason_or_default(self) -> str:
        return self.reason or f"{self.kind} by {self.actor}"


ResolveAction = Literal["retry_rollback", "keep_current"]
RESOLVE_ACTIONS: tuple[ResolveAction, ...] = ("retry_rollback", "keep_current")


class ResolveConflict(CommandBase):
    """Move an improvement paused as `conflict` on (who may: streams/decisions.py): `retry_rollback` once a
    person put the changed targets back (the rollback runs again, still never overwriting someone else's
    value), or `keep_current`: give up, the hand-made values stay (the improvement ends `rejected`)."""

    kind: Literal["resolve_conflict"] = "resolve_conflict"
    improvement_id: str = Field(min_length=1)
    action: ResolveAction
    reason: str = ""
    all_tenants: bool = False

    def reason_or_default(self) -> str:
        return self.reason or f"conflict resolved by {self.actor}: {self.action.replace('_', ' ')}"


class SetFlag(CommandBase):
    """Turn one `enable_*` feature flag on or off (admin only)."""

    kind: Literal["set_flag"] = "set_flag"
    name: str = Field(pattern=r"^enable_[a-z_]+$")
    value: bool


class GenerateComponent(CommandBase):
    """Generate a new component (skill, agent or service) from requirements."""

    kind: Literal["generate_component"] = "generate_component"
    component_type: Literal["skill", "agent", "service"] = "service"
    requirements: dict[str, Any] = Field(min_length=1)
    context: dict[str, Any] = {}


Command = Annotated[TriggerCycle | Decision | ResolveConflict | SetFlag | GenerateComponent,
                    Field(discriminator="kind")]
COMMAND_TYPES: tuple[type[CommandBase], ...] = (TriggerCycle, Decision, ResolveConflict, SetFlag, GenerateComponent)
COMMAND_KINDS: tuple[str, ...] = ("trigger_cycle", *DECISION_KINDS, "resolve_conflict", "set_flag",
                                  "generate_component")
_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def validation_reason(exc: ValidationError, limit: int = 5) -> str:
    """`field: message; ...` of the first errors: what the sender must fix."""
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or '<record>'}: {e.get('msg', 'invalid')}"
             for e in exc.errors()[:limit]]
    return "; ".join(parts)


def parse_command(data: bytes | str) -> Command:
    """The typed command of a `commands` record; BadRecord (reason: what is wrong) when it is none."""
    try:
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        types = {e.get("type") for e in exc.errors()}
        if "json_invalid" in types or "json_type" in types:
            raise BadRecord("command is not a JSON object", str(exc.errors()[0].get("msg", ""))) from exc
        if "union_tag_not_found" in types:
            raise BadRecord("command without a kind") from exc
        if "union_tag_invalid" in types:
            kind = next((e.get("ctx", {}).get("tag") for e in exc.errors() if e.get("type") == "union_tag_invalid"),
                        "?")
            raise BadRecord(f"unknown command kind '{kind}'", f"known kinds: {', '.join(COMMAND_KINDS)}") from exc
        raise BadRecord("malformed command", validation_reason(exc)) from exc

