"""The commands agent (agents/improvement/cycle.py): a cycle start that waits for its evidence holds up only
its own tenant's later cycle starts, never another tenant's cycles or any decision."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from agents.improvement import cycle
from streams.commands import Decision, TriggerCycle
from streams.testing import AgentHarness

WAIT = 1.0  # what each cycle start of the slow tenant takes


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Stand-in handlers: (what, when) once handled; the slow tenant's cycle starts take WAIT each."""
    done: list[tuple[str, float]] = []
    t0 = time.monotonic()

    async def start(cmd: TriggerCycle) -> None:
        if cmd.tenant_id == "slow":
            await asyncio.sleep(WAIT)
        done.append((f"cycle {cmd.tenant_id} {cmd.component}", time.monotonic() - t0))

    async def decide(cmd: Decision) -> None:
        done.append((f"decision {cmd.improvement_id}", time.monotonic() - t0))

    monkeypatch.setitem(cycle.HANDLERS, TriggerCycle, start)
    monkeypatch.setitem(cycle.HANDLERS, Decision, decide)
    return done


async def _run(commands: list[Any], until: int, done: list[tuple[str, float]]) -> None:
    async with AgentHarness(), cycle.commands.test_context() as agent:
        for cmd in commands:
            await agent.put(value=cmd.to_bytes(), partition=0)
        deadline = time.monotonic() + 4 * WAIT + 5
        while len(done) < until and time.monotonic() < deadline:  # the agent runs until the context ends
            await asyncio.sleep(0.05)


async def test_a_slow_tenant_holds_up_only_its_own_cycles(handled: list[tuple[str, float]]) -> None:
    now = datetime.now(UTC)
    slow = [TriggerCycle(command_id=f"s{i}", timestamp=now, actor="healing", tenant_id="slow", component=f"c{i}")
            for i in range(3)]
    fast = TriggerCycle(command_id="f", timestamp=now, actor="operator", tenant_id="fast", component="api")
    decision = Decision(command_id="d", timestamp=now, actor="approver", improvement_id="imp-1", kind="approve")
    await _run([*slow, fast, decision], 5, handled)
    at = dict(handled)
    assert at["cycle fast api"] < WAIT / 2, handled  # not behind the slow tenant's three starts
    assert at["decision imp-1"] < WAIT / 2, handled
    slow_at = [at[f"cycle slow c{i}"] for i in range(3)]
    assert slow_at == sorted(slow_at) and slow_at[2] >= 3 * WAIT * 0.9, handled  # in order, one at a time
    assert not cycle._tenant_queues, "a tenant's queue is forgotten once its starts are done"
