"""Lifecycle fold: legal path, idempotent replays, illegal transitions, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.improvement.logic.lifecycle import (
    IllegalTransition,
    allowed,
    fold,
    fold_all,
    new_event,
    next_event,
)
from streams.records import ImprovementExecution

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OPP = {
    "opportunity_id": "o1", "title": "t", "description": "d", "tenant_id": "acme", "problem_type": "latency",
    "first_seen": T0.isoformat(), "last_seen": T0.isoformat(),
}


def _run(statuses: list[str]) -> ImprovementExecution:
    ex = fold(None, new_event("imp-1", "pending", T0, data={"opportunity": OPP}))
    for i, s in enumerate(statuses, start=1):
        ex = fold(ex, next_event(ex, s, T0 + timedelta(seconds=i)))  # type: ignore[arg-type]
    return ex


def test_happy_path_to_completed() -> None:
    ex = _run(["queued", "generating", "validating", "awaiting_approval", "deploying", "monitoring", "completed"])
    assert ex.status == "completed"
    assert ex.tenant_id == "acme"
    assert ex.opportunity is not None and ex.opportunity.opportunity_id == "o1"
    assert ex.deployment_time == T0 + timedelta(seconds=6)
    assert ex.completion_time == T0 + timedelta(seconds=7)
    assert len(ex.history) == 8


def test_rollback_path_sets_flag() -> None:
    ex = _run(["generating", "validating", "deploying", "monitoring", "rolling_back", "rolled_back"])
    assert ex.status == "rolled_back" and ex.rollback_triggered


def test_deferred_round_trip_and_reject() -> None:
    ex = _run(["generating", "validating", "awaiting_approval", "deferred", "awaiting_approval", "rejected"])
    assert ex.status == "rejected"


@pytest.mark.parametrize("bad", [["deploying"], ["generating", "completed"], ["generating", "monitoring"],
                                 ["generating", "validating", "deferred"]])
def test_illegal_transitions_raise(bad: list[str]) -> None:
    with pytest.raises(IllegalTransition, match="not allowed"):
        _run(bad)


def test_terminal_is_final() -> None:
    ex = _run(["failed"])
    with pytest.raises(IllegalTransition, match="terminal"):
        fold(ex, next_event(ex, "generating", T0))
    assert not allowed("completed", "failed")


def test_first_event_must_be_pending() -> None:
    with pytest.raises(IllegalTransition, match="pending"):
        fold(None, new_event("imp-1", "generating", T0))


def test_duplicate_and_replay_are_harmless() -> None:
    e0 = new_event("imp-1", "pending", T0)
    ex = fold(None, e0)
    e1 = next_event(ex, "generating", T0)
    ex1 = fold(ex, e1)
    assert fold(ex1, e1) is ex1  # duplicate ignored
    assert fold(ex1, e0) is ex1  # old event replayed: ignored, no illegal-transition error
    states = fold_all([e0, e1, e0, e1])
    assert states["imp-1"].status == "generating" and len(states["imp-1"].history) == 2


def test_event_ids_are_deterministic_after_crash() -> None:
    ex = fold(None, new_event("imp-1", "pending", T0))
    a = next_event(ex, "generating", T0)
    b = next_event(ex, "generating", T0 + timedelta(hours=1))  # re-run after crash: same id
    assert a.event_id == b.event_id == "imp-1:generating:1"


def test_same_status_update_merges_data() -> None:
    ex = _run(["generating", "validating", "deploying", "monitoring"])
    ex = fold(ex, next_event(ex, "monitoring", T0, data={"degradation": 0.03, "verdict": "continue"}))
    assert ex.status == "monitoring" and ex.degradation == 0.03 and ex.verdict == "continue"


def test_event_for_other_improvement_rejected() -> None:
    ex = fold(None, new_event("imp-1", "pending", T0))
    with pytest.raises(IllegalTransition):
        fold(ex, new_event("imp-2", "generating", T0, sequence=1))


def test_fold_does_not_mutate_the_previous_state() -> None:
    ex = _run(["generating"])
    after = fold(ex, next_event(ex, "validating", T0, data={"plan": {"changes": [1]}}))
    assert ex.status == "generating" and ex.plan == {} and len(ex.history) == 2
    assert after.status == "validating" and after.plan == {"changes": [1]} and len(after.history) == 3


# ------------------------------------------------------------------ gaps, replays, rolling back, conflict

def _deployed() -> ImprovementExecution:
    return _run(["generating", "validating", "deploying", "monitoring"])


def test_rollback_is_a_state_of_its_own() -> None:
    ex = _deployed()
    ex = fold(ex, next_event(ex, "rolling_back", T0, data={"verdict": "rollback"}))
    assert ex.status == "rolling_back" and ex.rollback_triggered
    done = fold(ex, next_event(ex, "rolled_back", T0))
    assert done.status == "rolled_back" and done.rollback_triggered


@pytest.mark.parametrize("status", ["deploying", "monitoring", "rolling_back"])
def test_applied_changes_are_never_abandoned_by_failed(status: str) -> None:
    assert not allowed(status, "failed") or status == "rolling_back"
    assert not allowed("monitoring", "rejected") and not allowed("deploying", "failed")
    assert allowed("monitoring", "rolling_back") and allowed("deploying", "rolling_back")


def test_conflict_pauses_and_can_resume_the_rollback() -> None:
    ex = _deployed()
    ex = fold(ex, next_event(ex, "conflict", T0, reason="changed by hand"))
    assert ex.status == "conflict"
    assert allowed("conflict", "rolling_back") and allowed("rolling_back", "conflict")
    assert not allowed("conflict", "monitoring") and not allowed("conflict", "completed")


def test_gap_at_start_opens_the_state_from_the_event() -> None:
    # the broker came back empty: the first event seen is a later one (its sequence says so)
    ev = new_event("imp-9", "monitoring", T0, data={"deployment": {"stage": "canary", "canary": []}}, sequence=6,
                   tenant_id="acme")
    ex = fold(None, ev)
    assert ex.status == "monitoring" and ex.tenant_id == "acme" and ex.deployment["stage"] == "canary"
    nxt = next_event(ex, "rolling_back", T0)
    assert nxt.event_id == "imp-9:rolling_back:7"  # numbering continues after the gap
    assert fold(fold(ex, nxt), nxt).status == "rolling_back"  # and its replay is ignored


def test_gap_in_the_middle_moves_forward_never_back() -> None:
    ex = _run(["generating", "validating"])  # 3 events folded; deploying + monitoring lost
    mon = new_event("imp-1", "monitoring", T0, sequence=5)
    assert fold(ex, mon).status == "monitoring"
    late = fold(ex, mon)
    stale = new_event("imp-1", "generating", T0, sequence=9)  # a gap that would move back: refused
    with pytest.raises(IllegalTransition):
        fold(late, stale)


def test_replays_in_any_order_are_harmless() -> None:
    e = [new_event("imp-1", "pending", T0)]
    ex = fold(None, e[0])
    for i, s in enumerate(["generating", "validating", "deploying", "monitoring"], start=1):
        e.append(next_event(ex, s, T0 + timedelta(seconds=i)))  # type: ignore[arg-type]
        ex = fold(ex, e[-1])
    for ev in [*e, *reversed(e), e[2]]:
        assert fold(ex, ev) is ex
    states = fold_all([*e, *e])
    assert states["imp-1"].status == "monitoring" and len(states["imp-1"].history) == 5


def test_first_event_without_gap_must_still_be_pending() -> None:
    with pytest.raises(IllegalTransition, match="pending"):
        fold(None, new_event("imp-1", "monitoring", T0, sequence=0))
