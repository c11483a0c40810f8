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
