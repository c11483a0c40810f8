"""The commands topic's typed union: parsing (old and new wire form), refusals as BadRecord, dispatch by type."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import topics as T
from streams.commands import (
    COMMAND_KINDS,
    COMMAND_TYPES,
    DEFAULT_WINDOW_HOURS,
    Command,
    Decision,
    GenerateComponent,
    ResolveConflict,
    SetFlag,
    TriggerCycle,
    parse_command,
)
from streams.errors import BadRecord, InputError, KaizenError
from streams.records import DeadLetter

NOW = datetime.now(UTC)
BASE = {"command_id": "c-1", "timestamp": NOW.isoformat(), "actor": "alice", "roles": ["operator"]}


def raw(**fields: Any) -> bytes:
    # Stamped now, not at import: a suite that runs for minutes must not make these commands stale.
    return orjson.dumps({**BASE, "timestamp": datetime.now(UTC).isoformat(), **fields})


def test_every_kind_parses_to_its_type_and_round_trips() -> None:
    cases: list[tuple[dict[str, Any], type]] = [
        ({"kind": "trigger_cycle", "tenant_id": "t", "analysis_window_hours": 6, "component": "api"}, TriggerCycle),
        ({"kind": "approve", "improvement_id": "imp-1", "reason": "ok"}, Decision),
        ({"kind": "reject", "improvement_id": "imp-1", "reason": "no"}, Decision),
        ({"kind": "defer", "improvement_id": "imp-1"}, Decision),
        ({"kind": "resolve_conflict", "improvement_id": "imp-1", "action": "retry_rollback"}, ResolveConflict),
        ({"kind": "set_flag", "name": "enable_component_generation", "value": True}, SetFlag),
        ({"kind": "generate_component", "component_type": "skill", "requirements": {"a": 1}}, GenerateComponent),
    ]
    assert sorted(c[0]["kind"] for c in cases) == sorted(COMMAND_KINDS)
    for fields, typ in cases:
        cmd = parse_command(raw(**fields))
        assert type(cmd) is typ and cmd.kind == fields["kind"]
        again = parse_command(cmd.to_bytes())
        assert again == cmd and "args" not in orjson.loads(cmd.to_bytes())


def test_defaults_are_written_once_in_the_record() -> None:
    cmd = parse_command(raw(kind="trigger_cycle"))
    assert isinstance(cmd, TriggerCycle)
    assert cmd.analysis_window_hours == DEFAULT_WINDOW_HOURS and cmd.cycle_kind == "manual"
    assert cmd.improvements_cap(5) == 5 and cmd.model_copy(update={"max_improvements": 2}).improvements_cap(5) == 2
    redelivered = parse_command(raw(kind="trigger_cycle"))
    assert isinstance(redelivered, TriggerCycle) and cmd.resolved_cycle_id() == redelivered.resolved_cycle_id()
    assert cmd.model_copy(update={"cycle_id": "cy"}).resolved_cycle_id() == "cy"
    d = parse_command(raw(kind="defer", improvement_id="i"))
    assert isinstance(d, Decision) and d.reason_or_default() == "defer by alice" and d.all_tenants is False


def test_records_written_before_the_union_still_parse() -> None:
    """The old wire form nested the kind's fields under `args` (MCP, scheduler, alarms, demo wrote it)."""
    old_trigger = raw(kind="trigger_cycle", tenant_id="t", improvement_id=None,
                      args={"analysis_window_hours": 1, "max_improvements": 1, "cycle_id": "cy",
                            "cycle_kind": "emergency", "component": "api", "problem_type": "latency",
                            "alarm_event_id": "e-1", "alarm_at": NOW.isoformat()})
    cmd = parse_command(old_trigger)
    assert isinstance(cmd, TriggerCycle)
    assert (cmd.cycle_kind, cmd.analysis_window_hours, cmd.max_improvements, cmd.cycle_id, cmd.component) == (
        "emergency", 1, 1, "cy", "api")
    old_approve = parse_command(raw(kind="approve", improvement_id="imp-9", args={"reason": "fine"}))
    assert isinstance(old_approve, Decision) and old_approve.reason == "fine"
    old_gen = parse_command(raw(kind="generate_component", args={"component_type": "agent",
                                                                  "requirements": {"x": 1}, "context": {}}))
    assert isinstance(old_gen, GenerateComponent) and old_gen.component_type == "agent"


@pytest.mark.parametrize(("data", "reason"), [
    (raw(kind="launch_missiles"), "unknown command kind 'launch_missiles'"),
    (raw(), "command without a kind"),
    (b"{not json", "command is not a JSON object"),
    (raw(kind="approve"), "malformed command"),  # no improvement_id
    (raw(kind="resolve_conflict", improvement_id="i", action="overwrite"), "malformed command"),
    (raw(kind="resolve_conflict", improvement_id="i"), "malformed command"),  # no action
    (raw(kind="trigger_cycle", analysis_window_hours=10_000), "malformed command"),
    (raw(kind="trigger_cycle", args=[1, 2]), "malformed command"),
    (raw(kind="set_flag", name="rm -rf", value=True), "malformed command"),
    (raw(kind="generate_component", component_type="robot", requirements={"a": 1}), "malformed command"),
    (orjson.dumps({"kind": "defer", "improvement_id": "i"}), "malformed command"),  # no id, actor, time
])
def test_what_is_no_command_raises_bad_record_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BadRecord) as info:
        parse_command(data)
    assert info.value.reason == reason
    assert isinstance(info.value, InputError) and isinstance(info.value, KaizenError)
    assert isinstance(info.value, ValueError)  # callers catching ValueError around parsing still catch it


def test_the_union_lists_every_command_type() -> None:
    members = typing.get_args(typing.get_args(Command)[0])
    assert set(members) == set(COMMAND_TYPES)


# ---------------------------------------------------------------------------------- the worker's dispatch


@pytest.fixture
def cycle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    from agents.improvement import cycle as mod
    from streams import app as A

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    return mod


def test_every_command_type_has_a_handler(cycle: Any) -> None:
    assert set(cycle.HANDLERS) == set(COMMAND_TYPES)


async def test_dispatch_calls_the_handler_of_the_commands_type(cycle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def recorder(name: str) -> Any:
        async def handler(cmd: Any) -> None:
            seen.append(f"{name}:{cmd.kind}")
        return handler

    monkeypatch.setattr(cycle, "HANDLERS", {t: recorder(t.__name__) for t in COMMAND_TYPES})
    for kind, extra in (("trigger_cycle", {}), ("approve", {"improvement_id": "i"}),
                        ("reject", {"improvement_id": "i"}), ("defer", {"improvement_id": "i"}),
                        ("resolve_conflict", {"improvement_id": "i", "action": "keep_current"}),
                        ("set_flag", {"name": "enable_x", "value": False}),
                        ("generate_component", {"requirements": {"a": 1}})):
        await cycle.handle_command(parse_command(raw(kind=kind, **extra)))
    assert seen == ["TriggerCycle:trigger_cycle", "Decision:approve", "Decision:reject", "Decision:defer",
                    "ResolveConflict:resolve_conflict", "SetFlag:set_flag", "GenerateComponent:generate_component"]


async def test_bad_and_failing_commands_are_dead_lettered_with_the_reason(cycle: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.testing import AgentHarness

    async def broken(cmd: Any) -> None:
        raise RuntimeError("flags store unavailable")

    monkeypatch.setattr(cycle, "HANDLERS", {**cycle.HANDLERS, SetFlag: broken})
    stale = raw(kind="defer", improvement_id="i", timestamp=(NOW - timedelta(days=1)).isoformat())
    async with AgentHarness() as h:
        await h.feed(cycle.commands, [raw(kind="launch_missiles"), b"{not json", raw(kind="approve"), stale,
                                      raw(kind="set_flag", name="enable_x", value=True)], partition=2)
        dead = h.records(T.DEADLETTER, DeadLetter)
    assert [d.reason for d in dead] == ["unknown command kind 'launch_missiles'", "command is not a JSON object",
                                        "malformed command", "set_flag command failed"]
    assert all(d.source_topic == T.COMMANDS and d.partition == 2 for d in dead)
    assert "launch_missiles" in dead[0].original and "improvement_id" in dead[2].error
    assert "flags store unavailable" in dead[3].error
    assert h.values(T.IMPROVEMENT_EVENTS) == []  # the stale decision was skipped, not run


async def test_set_flag_needs_admin(cycle: Any) -> None:
    from streams.testing import AgentHarness

    async with AgentHarness() as h:
        await cycle.set_flag(SetFlag(command_id="f1", timestamp=NOW, actor="op", roles=["approver"],
                                     name="enable_autonomous_improvements", value=True))
        assert h.values(T.CONFIG) == []
        await cycle.set_flag(SetFlag(command_id="f2", timestamp=NOW, actor="root", roles=["admin"],
                                     name="enable_autonomous_improvements", value=True))
        [(key, value)] = h.sent[T.CONFIG]
    assert key == b"flags/enable_autonomous_improvements" and orjson.loads(value)["value"] is True



async def test_improvement_events_that_cannot_be_used_are_dead_lettered(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """The improvements agent's side of the same rule: undecodable or unfoldable events are dead-lettered."""
    from types import SimpleNamespace

    from agents.improvement import agent as improvements_agent
    from streams import app as A
    from streams.testing import AgentHarness

    async def ctx() -> Any:
        return SimpleNamespace(views=SimpleNamespace(improvements={}, active=lambda _s: []))

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    monkeypatch.setattr(improvements_agent, "step_context", ctx)
    improvements_agent._store.clear()
    bad_opportunity = orjson.dumps({"event_id": "e1", "improvement_id": "imp-x", "status": "pending",
                                    "timestamp": NOW.isoformat(), "data": {"opportunity": {"title": 5}}})
    try:
        async with AgentHarness() as h:
            await h.feed(improvements_agent.improvements, [b"{not json", orjson.dumps({"status": "exploded"}),
                                                           bad_opportunity], partition=1)
            dead = h.records(T.DEADLETTER, DeadLetter)
    finally:
        improvements_agent._store.clear()
    # checked against the typed union at the boundary (streams/improvement_events.py), each with its reason
    assert [d.reason for d in dead] == ["improvement event is not a JSON object",
                                        "unknown improvement status 'exploded'", "malformed improvement event"]
    assert "pending.data.opportunity" in dead[2].error
    assert all(d.source_topic == T.IMPROVEMENT_EVENTS and d.partition == 1 for d in dead)
    assert "opportunity_id" in dead[2].error
