"""CaughtUp (streams/commits.py): a commit shortly after the last message a partition holds was handled,
none while a backlog lasts, at most one at a time, and a failing commit or an unassigned partition never
raises into the agent."""

from __future__ import annotations

import asyncio

from streams.commits import CaughtUp


class _Consumer:
    def __init__(self, high: dict[str, int | None], fail: bool = False) -> None:
        self.high = high
        self.fail = fail
        self.commits = 0

    def highwater(self, tp: str) -> int | None:
        if tp not in self.high:
            raise AssertionError("not assigned")
        return self.high[tp]

    async def commit(self) -> bool:
        self.commits += 1
        if self.fail:
            raise RuntimeError("broker away")
        return True


class _App:
    def __init__(self, consumer: _Consumer) -> None:
        self.consumer = consumer


def _run(consumer: _Consumer, events: list[tuple[str, int]], min_gap: float = 0.0) -> CaughtUp:
    async def go() -> CaughtUp:
        c = CaughtUp(_App(consumer), min_gap=min_gap, delay=0.001)
        for tp, off in events:
            c.handled(tp, off)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        return c
    return asyncio.run(go())


def test_only_the_last_message_of_a_partition_commits() -> None:
    consumer = _Consumer({"a": 10})
    _run(consumer, [("a", o) for o in range(0, 9)])
    assert consumer.commits == 0
    _run(consumer, [("a", 9)])
    assert consumer.commits == 1


def test_one_commit_at_a_time_and_none_for_unknown_or_unassigned() -> None:
    consumer = _Consumer({"a": 3, "b": 5, "c": None})
    _run(consumer, [("a", 2), ("b", 4), ("a", 2), ("c", 7), ("x", 1)], min_gap=10.0)
    assert consumer.commits == 1


def test_a_failed_commit_is_not_raised() -> None:
    consumer = _Consumer({"a": 1}, fail=True)
    c = _run(consumer, [("a", 0)])
    assert consumer.commits == 1 and c.commits == 0


class _SlowConsumer(_Consumer):
    """A commit that takes a while, as a real one does (it flushes the producer first)."""

    def __init__(self, high: dict[str, int | None]) -> None:
        super().__init__(high)
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def commit(self) -> bool:
        self.commits += 1
        self.started.set()
        await self.release.wait()
        return True


def test_a_message_handled_while_a_commit_runs_gets_a_commit_after_it() -> None:
    async def go() -> tuple[int, int]:
        consumer = _SlowConsumer({"raw": 5, "clean": 3})
        c = CaughtUp(_App(consumer), min_gap=0.0, delay=0.001)
        c.handled("raw", 4)  # the raw backlog's end: a commit starts
        await asyncio.wait_for(consumer.started.wait(), 1.0)
        c.handled("clean", 2)  # the clean topic's end, while that commit runs: it may not be in it
        consumer.release.set()
        await asyncio.sleep(0.05)
        during = consumer.commits
        c.handled("raw", 3)  # not the last message: nothing more
        await asyncio.sleep(0.05)
        return during, consumer.commits
    during, after = asyncio.run(go())
    assert during == 2 and after == 2


def test_messages_handled_before_a_commit_starts_go_with_it() -> None:
    consumer = _Consumer({"a": 3, "b": 5})
    _run(consumer, [("a", 2), ("b", 4)], min_gap=0.0)
    assert consumer.commits == 1
