"""When scheduled improvement cycles start: every IMPROVEMENT_CYCLE_INTERVAL_HOURS from
IMPROVEMENT_CYCLE_START_TIME (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# A slot is started only this soon after its start (a worker that starts later waits for the next one).
SLOT_GRACE = timedelta(minutes=5)
DAY = timedelta(days=1)


def current_slot(now: datetime, start_time: str, interval_hours: float) -> tuple[str, datetime]:
    """The id and start of the slot `now` lies in.

    An interval of a day or less repeats within each day from the start time (02:00, 09:00, 16:00 and
    02:00 again for 7 hours); a longer one is counted from the start time of 1970-01-01 (every 48 hours is
    every other day, 8,760 hours is once a year). Counting a longer interval from today's start time, as
    the scheduler once did, started a cycle every day at the start time whatever the interval.
    """
    hh, mm = (int(x) for x in start_time.split(":"))
    interval = timedelta(hours=interval_hours)
    if interval <= DAY:
        anchor = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if anchor > now:
            anchor -= DAY
        slot = int((now - anchor) / interval)
        return f"{anchor.date().isoformat()}#{slot}", anchor + slot * interval
    epoch = datetime(1970, 1, 1, hh, mm, tzinfo=UTC)
    slot = int((now - epoch) / interval)
    start = epoch + slot * interval
    return f"{start.isoformat()}/{interval_hours:g}h", start


def due(now: datetime, start_time: str, interval_hours: float, last_slot: str | None) -> str | None:
    """The slot to start now, if any: not started yet and begun less than SLOT_GRACE ago."""
    slot_id, start = current_slot(now, start_time, interval_hours)
    if slot_id == last_slot or now - start > SLOT_GRACE:
        return None
    return slot_id
