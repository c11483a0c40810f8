"""Reading improvements.events back from its start launches no old step (agents/improvement/logic/replay.py)."""

from __future__ import annotations

from agents.improvement.logic.replay import ReplayGate

STARTED = 1_700_000_000.0  # when the worker started (epoch seconds)


def test_old_events_read_back_launch_nothing_until_the_partition_has_caught_up() -> None:
    gate = ReplayGate(started_at=STARTED, settle_seconds=5)
    assert gate.on_event(0, caught_up=False, written_at=STARTED - 3600, now=100.0) is False
    assert gate.behind(0, now=100.5)
    assert not gate.behind(1, now=100.5)  # another partition is not held back
    assert gate.on_event(0, caught_up=False, written_at=STARTED - 1, now=101.0) is False
    assert gate.on_event(0, caught_up=True, written_at=STARTED - 0.5, now=101.2) is True  # the last one it holds
    assert not gate.behind(0, now=101.3)


def test_events_written_since_the_start_are_live_work_even_in_a_burst() -> None:
    gate = ReplayGate(started_at=STARTED, settle_seconds=5)
    assert gate.on_event(2, caught_up=False, written_at=STARTED + 60, now=10.0) is True  # more behind it, but live
    assert gate.behind(2, now=10.1)  # (the supervisor waits for the burst's end)
    assert gate.on_event(2, caught_up=True, written_at=STARTED + 61, now=10.2) is True
    assert not gate.behind(2, now=10.3)


def test_a_partition_quiet_for_the_settle_time_counts_as_caught_up() -> None:
    gate = ReplayGate(started_at=STARTED, settle_seconds=5)
    gate.on_event(3, caught_up=False, written_at=STARTED - 900, now=50.0)  # a high-water mark never reached
    assert gate.behind(3, now=54.9)
    assert not gate.behind(3, now=55.0)
    assert not gate.behind(3, now=55.1)


def test_partitions_no_longer_owned_are_forgotten() -> None:
    gate = ReplayGate(started_at=STARTED)
    gate.on_event(0, caught_up=False, written_at=STARTED - 900, now=1.0)
    gate.on_event(1, caught_up=False, written_at=STARTED - 900, now=1.0)
    gate.keep_only({1})
    assert not gate.behind(0, now=1.1)
    assert gate.behind(1, now=1.1)
