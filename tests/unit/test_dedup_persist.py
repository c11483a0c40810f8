"""persist_after (agents/ingest/agent.py): a dedup delta already applied in memory is only appended to the
changelog while that window is still the partition's state; a state rebuilt meanwhile gets it applied; a
revoked partition gets nothing; undelivered records keep it out of the changelog."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from agents.ingest.agent import persist_after
from agents.ingest.logic.dedup import DedupWindow, apply_dedup_delta, dedup_delta


class _Store:
    """The part of ChangelogStore persist_after uses, recording what it was asked to do."""

    def __init__(self, state: DedupWindow | None) -> None:
        self.state = state
        self.calls: list[tuple[str, Any]] = []

    def current(self, partition: int) -> DedupWindow | None:
        return self.state

    async def append(self, partition: int, delta: Any) -> list[Any]:
        self.calls.append(("append", delta))
        return []

    async def record(self, partition: int, delta: Any, wait: bool = False) -> None:
        assert self.state is not None
        apply_dedup_delta(self.state, delta)
        self.calls.append(("record", delta))


def _done() -> asyncio.Future[Any]:
    f: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
    f.set_result(None)
    return f


def test_the_window_it_was_applied_to_is_only_appended_to() -> None:
    async def go() -> None:
        w = DedupWindow(300)
        delta = dedup_delta([1, 2], 1000.0)
        apply_dedup_delta(w, delta)
        store = _Store(w)
        await persist_after(store, 0, delta, [_done()], applied_to=w)  # type: ignore[arg-type]
        assert store.calls == [("append", delta)]
    asyncio.run(go())


def test_a_state_rebuilt_meanwhile_gets_the_delta_applied() -> None:
    async def go() -> None:
        old, rebuilt = DedupWindow(300), DedupWindow(300)
        delta = dedup_delta([7], 1000.0)
        apply_dedup_delta(old, delta)
        store = _Store(rebuilt)
        await persist_after(store, 0, delta, [_done()], applied_to=old)  # type: ignore[arg-type]
        assert store.calls == [("record", delta)]
        assert rebuilt.filter_new([7], 1001.0) == [False]
    asyncio.run(go())


def test_a_revoked_partition_or_undelivered_records_write_nothing() -> None:
    async def go() -> None:
        delta = dedup_delta([3], 1000.0)
        store = _Store(None)
        await persist_after(store, 0, delta, [_done()], applied_to=DedupWindow(300))  # type: ignore[arg-type]
        assert store.calls == []
        w = DedupWindow(300)
        store = _Store(w)
        failed: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
        failed.set_exception(KafkaTimeoutError())
        await persist_after(store, 0, delta, [failed], applied_to=w)  # type: ignore[arg-type]
        assert store.calls == []
    asyncio.run(go())
