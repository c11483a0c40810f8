"""Offsets committed as soon as an agent has caught up with its partition, not only on the commit timer.

Faust commits every `broker_commit_interval` (0.5 s). When a backlog ends — the last message a partition
holds has been handled — its offset would wait up to that long, so a burst is reported done (committed) up
to half a second after its work was, and a worker lost in that time has it redelivered. An agent calls
`CaughtUp.handled` after each event; when the event was the last its partition holds (its offset + 1 reaches
the partition's high-water mark), a commit is made shortly after, once the stream has acked the event.
Under a steady backlog the partition is never caught up and only the timer commits, so this adds nothing
where commits cost throughput; a trickle of messages gets at most one extra commit per `min_gap` seconds.
A failed early commit is logged: the timer's next commit is the guarantee, as before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

ACK_DELAY_SECONDS = 0.02  # the stream acks an event when the agent asks for the next one: after this, it has
MIN_GAP_SECONDS = 0.1     # between two early commits


class CaughtUp:
    """Early commits of one Faust app's consumer (see the module docstring)."""

    def __init__(self, app: Any, min_gap: float = MIN_GAP_SECONDS, delay: float = ACK_DELAY_SECONDS) -> None:
        self.app = app
        self.min_gap = min_gap
        self.delay = delay
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")
        self._again = False  # a caught-up event was handled while a commit ran: one more commit after it
        self.commits = 0

    def caught_up(self, tp: Any, offset: int) -> bool:
        """Whether `offset` is the last message of `tp` the consumer knows of."""
        try:
            high = self.app.consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not assigned (any more) or no fetch yet: no early commit
            return False
        return high is not None and offset + 1 >= high

    def handled(self, tp: Any, offset: int) -> None:
        """Call after the event at `offset` of `tp` was handled."""
        if not self.caught_up(tp, offset):
            return
        if self._task is not None and not self._task.done():
            # A commit is on its way. What was handled before it starts is acked by then (an agent acks its
            # event when it asks for the next one, before the commit can run) and goes with it; what is
            # handled while it runs may miss it (the clean-topic guard's last message did, in a suite run),
            # so then one more follows.
            self._again = True
            return
        self._schedule()

    def _schedule(self) -> None:
        wait = max(self.delay, self._last + self.min_gap - time.monotonic())
        self._task = asyncio.ensure_future(self._commit(wait))

    async def _commit(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._again = False  # every event handled so far is acked and is in this commit
        self._last = time.monotonic()
        try:
            await self.app.consumer.commit()
            self.commits += 1
        except Exception as exc:  # noqa: BLE001 - best effort; the commit timer goes on committing
            log.warning("early commit failed; the periodic commit will make it", error=f"{type(exc).__name__}: {exc}"[:300])
        if self._again:
            self._schedule()
