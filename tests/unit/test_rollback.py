"""Durable rollback without a broker: identifiers, the applied-changes journal, undo with retries and conflicts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.improvement.journal import AppliedJournal
from agents.improvement.logic.lifecycle import fold, new_event
from agents.improvement.rollback import Reconciler, changes_to_undo, undo_all
from agents.improvement.stepctx import StepContext
from connectors.actuators.base import (
    Actuator,
    AppliedChange,
    FingerprintMismatch,
    InvalidIdentifier,
    applied,
    check_identifier,
    logical_key,
    target_key,
)
from connectors.actuators.fingerprint import verify
from streams.records import ImprovementExecution
from streams.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("tenant", "component"), [
    ("acme", "api/canary"), ("acme", "../etc"), ("acme", ".."), ("acme", "Api/x"), ("acme", ""),
    ("acme", "a" * 64), ("acme", "api canary"), ("acme", "-api"), ("acme", "canary"), ("ac/me", "api"),
])
def test_unsafe_identifiers_are_refused_with_a_reason(tenant: str, component: str) -> None:
    with pytest.raises(InvalidIdentifier, match="tenant|component|reserved"):
        logical_key(tenant, component, "cache_size")


def test_safe_identifiers_build_keys() -> None:
    assert logical_key("acme", "check-out_2.v1", "feature_flags.circuit_breaker") == \
        "acme/check-out_2.v1/feature_flags.circuit_breaker"
    assert check_identifier("a" * 63, "tenant") == "a" * 63
    assert logical_key("Acme", "OrderProcessor", "cache_size") == "Acme/OrderProcessor/cache_size"  # case kept
    with pytest.raises(InvalidIdentifier):
        target_key("acme/api/cache_size", "canary/x")
    with pytest.raises(InvalidIdentifier):
        logical_key("acme", "api", "cache/size")


class MemoryActuator(Actuator):
    """An in-memory target store that can fail its next N calls (an unreachable endpoint)."""

    name = "memory"

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.fail_next = 0
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("endpoint unreachable")

    async def read(self, key: str) -> str | None:
        self._maybe_fail()
        return self.values.get(key)

    async def apply(self, key: str, value: str, improvement_id: str, target: str | None = None) -> AppliedChange:
        name = self.full_key(key, target)
        prev = self.values.get(name)
        self.values[name] = value
        return applied(name, prev, value, improvement_id, target, "1")

    async def rollback(self, change: AppliedChange) -> None:
        self._maybe_fail()
        if not verify(self.values.get(change.key), change.fingerprint):
            raise FingerprintMismatch(change.key)
        if change.previous is None:
            self.values.pop(change.key, None)
        else:
            self.values[change.key] = change.previous


def _ctx(tmp_path: Path, act: MemoryActuator) -> StepContext:
    return StepContext(Settings(), None, None, act, None, None, journal=AppliedJournal(tmp_path / "j.jsonl"))  # type: ignore[arg-type]


async def _no_sleep(_s: float) -> None:
    return None


def _ex(changes: list[AppliedChange], verdict: str = "rollback") -> ImprovementExecution:
    ex = fold(None, new_event("imp-1", "pending", T0, tenant_id="acme"))
    return ex.model_copy(update={"status": "rolling_back", "verdict": verdict, "deployment": {
        "stage": "canary", "canary": [c.as_dict() for c in changes], "full": []}})


async def test_undo_retries_through_outages_and_restores_absent_as_deleted(tmp_path: Path) -> None:
    act = MemoryActuator()
    ctx = _ctx(tmp_path, act)
    act.values["acme/api/timeout_ms"] = "5000"
    a = await act.apply("acme/api/timeout_ms", "7500", "imp-1", "canary")  # did not exist before
    b = await act.apply("acme/api/timeout_ms", "7500", "imp-1")
    act.fail_next = 7
    undone, conflicts, retries = await undo_all(ctx, _ex([a, b]), [b, a], sleep=_no_sleep)
    assert (undone, conflicts, retries) == ([b.key, a.key], [], 7)
    assert act.values == {"acme/api/timeout_ms": "5000"}  # the canary key deleted, the value restored
    assert {r["op"] for r in ctx.journal.lines()} == {"undone"}  # type: ignore[union-attr]


async def test_a_target_changed_by_hand_is_kept_and_reported(tmp_path: Path) -> None:
    act = MemoryActuator()
    ctx = _ctx(tmp_path, act)
    a = await act.apply("acme/api/pool_size", "15", "imp-1")
    c = await act.apply("acme/api/cache_size", "2048", "imp-1")
    act.values["acme/api/pool_size"] = "99"  # someone else's change
    undone, conflicts, _ = await undo_all(ctx, _ex([a, c]), [c, a], sleep=_no_sleep)
    assert (undone, conflicts) == ([c.key], [a.key])
    assert act.values == {"acme/api/pool_size": "99"}


async def test_journal_keeps_the_first_previous_and_outstanding_changes(tmp_path: Path) -> None:
    j = AppliedJournal(tmp_path / "j.jsonl")
    first = applied("k/a/b", None, "2", "imp-1", None)
    j.append("intent", first, "acme")
    j.append("intent", applied("k/a/b", "2", "2", "imp-1", None), "acme")  # a re-run reads its own value
    j.append("applied", first, "acme", version="7")
    (tmp_path / "j.jsonl").open("ab").write(b'{"op": "intent", "torn')  # a line torn by a crash
    assert j.first_previous("imp-1", "k/a/b") == (True, None)
    out = j.outstanding()
    assert list(out) == ["imp-1"] and out["imp-1"][0].previous is None and j.tenant_of("imp-1") == "acme"
    j.append("undone", first, "acme")
    assert j.outstanding() == {}


async def test_rollback_also_undoes_journal_only_changes(tmp_path: Path) -> None:
    act = MemoryActuator()
    ctx = _ctx(tmp_path, act)
    lost = await act.apply("acme/api/batch_size", "100", "imp-1")  # applied, its event never written
    ctx.journal.append("intent", lost, "acme")  # type: ignore[union-attr]
    todo = await changes_to_undo(ctx, _ex([]))
    assert [c.key for c in todo] == [lost.key]


async def test_reconciler_rolls_back_what_a_lost_improvement_left_applied(tmp_path: Path) -> None:
    act = MemoryActuator()
    ctx = _ctx(tmp_path, act)
    ch = await act.apply("acme/api/cache_size", "2048", "imp-lost", "canary")
    ctx.journal.append("intent", ch, "acme")  # type: ignore[union-attr]
    done = await act.apply("acme/api/pool_size", "20", "imp-done")
    ctx.journal.append("applied", done, "acme")  # type: ignore[union-attr]
    finished = fold(None, new_event("imp-done", "pending", T0)).model_copy(update={"status": "failed"})
    known: dict[str, Any] = {"imp-done": finished}
    rec = Reconciler(started=0.0)
    assert await rec.run(ctx, known.get) == []  # unknown once: maybe still on its way
    events = await rec.run(ctx, known.get)
    assert [(e.improvement_id, e.status, e.tenant_id) for e in events] == [("imp-lost", "rolling_back", "acme")]
    state = fold(None, events[0])  # the fold opens the lost improvement's state from the recovery event
    assert state.status == "rolling_back" and state.deployment["canary"][0]["key"] == ch.key
    assert "acme/api/pool_size" not in act.values  # the failed improvement's leftover was undone in place


def test_a_change_is_undone_through_the_actuator_that_applied_it() -> None:
    from agents.improvement.undo import actuator_for

    ssm, git = MemoryActuator(), MemoryActuator()
    ssm.name, git.name = "ssm", "git"  # type: ignore[misc]
    by_name = {"ssm": ssm, "git": git}
    file_change = AppliedChange("svc/config.yaml", None, "x: 1", "f", "imp", actuator="git")  # not .py
    assert actuator_for(by_name, file_change, ssm) is git
    assert actuator_for(by_name, AppliedChange("k/a/b", None, "1", "f", "imp", actuator="ssm"), git) is ssm
    assert actuator_for(by_name, AppliedChange("k/a/b", None, "1", "f", "imp"), ssm) is ssm  # older record


async def test_an_unsafe_key_is_not_retried_forever(tmp_path: Path) -> None:
    class Refusing(MemoryActuator):
        async def read(self, key: str) -> str | None:
            raise InvalidIdentifier(f"{key} is unsafe")

    act = Refusing()
    ctx = _ctx(tmp_path, act)
    bad = AppliedChange("../x", None, "1", "f", "imp-1", actuator="memory")
    assert await undo_all(ctx, _ex([bad]), [bad], sleep=_no_sleep) == ([], ["../x"], 0)


async def test_canary_key_dropped_at_completion_is_no_conflict_when_the_check_runs_again(tmp_path: Path) -> None:
    """Completing drops the canary keys, then writes `completed`: a check re-run in between (a worker killed
    before the event, or a step resumed before it was folded) must not call that removal someone else's."""
    from agents.improvement.rollout import changed_by_others

    act = MemoryActuator()
    ctx = _ctx(tmp_path, act)
    canary = await act.apply("acme/api/cache_size", "2048", "imp-1", "canary")  # did not exist before
    full = await act.apply("acme/api/cache_size", "2048", "imp-1")
    ex = _ex([canary]).model_copy(update={"status": "monitoring", "deployment": {
        "stage": "full", "canary": [canary.as_dict()], "full": [full.as_dict()]}})
    del act.values[canary.key]  # kaizen's own last step of the full stage
    assert await changed_by_others(ctx, ex, force=True) == []
    # in the canary stage the same removal is someone else's: the canary is what is being judged
    in_canary = ex.model_copy(update={"deployment": {**ex.deployment, "stage": "canary", "full": []}})
    assert await changed_by_others(ctx, in_canary, force=True) == [canary.key]
    # and a full-rollout key changed by hand is a conflict in the full stage
    act.values[full.key] = "999"
    assert await changed_by_others(ctx, ex, force=True) == [full.key]
