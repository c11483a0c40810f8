"""Scheduled cycles (agents/improvement/logic/schedule.py) and the guard of periodic tasks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import structlog

from agents.improvement.logic.schedule import current_slot, due
from streams.commands import MAX_WINDOW_HOURS, TriggerCycle
from streams.runtime import survives_broker_outage


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 12, day, hh, mm, tzinfo=UTC)


def test_a_daily_interval_starts_at_the_start_time_once() -> None:
    assert due(at(7, 2, 1), "02:00", 24, None) == "2026-12-07#0"
    assert due(at(7, 2, 1), "02:00", 24, "2026-12-07#0") is None  # already run
    assert due(at(7, 2, 6), "02:00", 24, None) is None  # more than 5 minutes past the slot's start
    assert due(at(7, 1, 59), "02:00", 24, None) is None  # yesterday's slot, long past


def test_a_shorter_interval_repeats_within_the_day() -> None:
    assert due(at(7, 9, 2), "02:00", 7, None) == "2026-12-07#1"
    assert due(at(7, 16, 0), "02:00", 7, None) == "2026-12-07#2"
    assert due(at(8, 2, 0), "02:00", 7, None) == "2026-12-08#0"  # a new day starts at the start time again
    assert due(at(7, 23, 2), "02:00", 7, None) == "2026-12-07#3" and due(at(7, 23, 30), "02:00", 7, None) is None


@pytest.mark.parametrize("hours", [48, 168, 8760])
def test_a_longer_interval_is_not_every_day(hours: float) -> None:
    """Counted from today's start time, every interval of a day or more started a cycle each day."""
    starts = [d for d in range(1, 3 * hours // 24 + 3)
              if due(datetime(2026, 1, 1, 2, 1, tzinfo=UTC) + timedelta(days=d), "02:00", hours, None)]
    if hours <= 168:
        assert len(starts) in (3, 4) and all(b - a == hours // 24 for a, b in zip(starts, starts[1:], strict=False))
    else:
        assert 2 <= len(starts) <= 4  # once a year
    slot_id, start = current_slot(at(7, 2, 1), "02:00", hours)
    assert (start.hour, start.minute) == (2, 0) and start <= at(7, 2, 1) and slot_id.endswith(f"/{hours:g}h")


def test_a_years_interval_gives_a_valid_cycle_window() -> None:
    """The demo's 8,760 hours: the scheduled cycle's window is capped at the longest a cycle may have."""
    TriggerCycle(command_id="c", timestamp=at(7, 2), actor="scheduler", cycle_kind="scheduled",
                 analysis_window_hours=min(8760, MAX_WINDOW_HOURS))


async def test_a_periodic_task_that_fails_is_logged_and_skipped_not_a_crash() -> None:
    @survives_broker_outage
    async def tick() -> None:
        raise ValueError("analysis_window_hours: input should be less than or equal to 720")

    with structlog.testing.capture_logs() as logs:
        await tick()
    assert [e["event"] for e in logs] == ["periodic task failed; skipped until its next tick"]
    assert logs[0]["task"] == "tick" and logs[0]["log_level"] == "error"
