"""A broker reset noticed by streams/epoch.py reaches its listeners: the improvement agent reconciles its
applied-changes journal at the next supervisor tick instead of waiting RECONCILE_EVERY_SECONDS."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streams import epoch


class ScriptedEpoch(epoch.BrokerEpoch):
    """A BrokerEpoch whose broker answers from a script: the epoch id read at each check."""

    def __init__(self, answers: list[str]) -> None:
        super().__init__("127.0.0.1:1", who="test")
        self.answers = answers

    async def _read(self) -> tuple[str | None, set[str]]:
        return self.answers.pop(0), set()

    async def _write(self) -> None:
        raise AssertionError("the epoch exists: nothing to write")


async def test_listeners_hear_a_reset_once_and_a_failing_one_does_not_hide_it(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    monkeypatch.setattr(epoch, "_listeners", [])
    heard: list[dict[str, Any]] = []

    def broken(_report: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    epoch.on_reset(broken)
    epoch.on_reset(heard.append)
    epoch.on_reset(heard.append)  # registered once
    ep = ScriptedEpoch(["a", "a", "b", "b"])
    assert [await ep.check() for _ in range(4)][2] is not None
    assert [r["kind"] for r in heard] == ["broker reset"]
    assert heard[0]["previous_epoch"] == "a" and heard[0]["epoch"] == "b"


async def test_a_detected_reset_makes_the_improvement_agent_reconcile_at_once() -> None:
    from agents.improvement import agent
    from agents.improvement.rollback import RECONCILE_EVERY_SECONDS, RECONCILE_GRACE_SECONDS

    assert agent.reconcile_soon in epoch._listeners  # subscribed when the agent module is loaded
    rec = agent._reconciler.setdefault("r", agent.rollback.Reconciler())
    now = time.monotonic()
    rec.started = now - 2 * RECONCILE_GRACE_SECONDS
    rec.last_run = now  # just reconciled: the next pass would be RECONCILE_EVERY_SECONDS away
    assert not rec.due(now + RECONCILE_EVERY_SECONDS / 5)
    ep = ScriptedEpoch(["a", "b"])
    await ep.check()
    assert await ep.check() is not None
    assert rec.due(now + RECONCILE_EVERY_SECONDS / 5), "the reset did not bring the reconciliation forward"
