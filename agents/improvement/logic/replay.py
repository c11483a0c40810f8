"""Reading improvements.events from its start must not run old steps again.

A consumer group that reads the topic from the beginning — a new `KAIZEN_APP_ID`, whose state stores start
empty — folds every improvement through each status it once went through. Launching each status's step as it
is folded would run old steps again: deploy a change that was rolled back long ago, until a later event of
the log cancels the step and the journal reconciliation undoes what it applied. (Commands follow the same
rule for the same reason: older than `KAIZEN_COMMAND_MAX_AGE_SECONDS`, they are skipped.)

So a step is launched from an event only when the event was written after this worker started (live work)
or its partition has caught up (the event is the last the partition holds). An older event read while the
partition is behind — a new group's read-back, or what a previous owner left uncommitted — launches nothing,
and nothing of that partition is resumed by the crash-resume supervisor either; once it has caught up — or
has had no event for `settle_seconds`, should the broker's high-water mark never be reached — the supervisor
resumes each improvement from the status it has by then, as it resumes those of a worker that crashed. (A
clock behind ours makes a live event look older: it then waits for the supervisor, a second or three.)
"""

from __future__ import annotations

from collections.abc import Iterable

SETTLE_SECONDS = 5.0   # a partition behind that has had no event this long is taken as caught up


class ReplayGate:
    """Which partitions of improvements.events are behind (being read back), per the events handled."""

    def __init__(self, started_at: float, settle_seconds: float = SETTLE_SECONDS) -> None:
        self.started_at = started_at  # epoch seconds: events written since are live work
        self.settle_seconds = settle_seconds
        self._behind: dict[int, float] = {}  # partition -> when its last event was handled (monotonic)

    def on_event(self, partition: int, caught_up: bool, written_at: float, now: float) -> bool:
        """Note an event of `partition` written at `written_at` (epoch seconds; `caught_up`: it is the last
        the partition holds); whether the step it leads to may be launched now."""
        if caught_up:
            self._behind.pop(partition, None)
        else:
            self._behind[partition] = now
        return caught_up or written_at >= self.started_at

    def behind(self, partition: int, now: float) -> bool:
        """Whether `partition` is still being read back; one quiet for `settle_seconds` no longer is."""
        seen = self._behind.get(partition)
        if seen is None:
            return False
        if now - seen >= self.settle_seconds:
            del self._behind[partition]
            return False
        return True

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns (their next owner reads them again)."""
        keep = set(partitions)
        for p in [p for p in self._behind if p not in keep]:
            del self._behind[p]
