"""A producer flush the broker holds up is named in the log, and still waits for the broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from structlog.testing import capture_logs

from streams.runtime import (
    FLUSH_STALL,
    FLUSH_WAIT_REPORT_SECONDS,
    pending_partitions,
    watch_faust_producer_flushes,
)


@pytest.fixture(autouse=True)
def _period_restored() -> Any:
    yield
    watch_faust_producer_flushes(FLUSH_WAIT_REPORT_SECONDS)  # as streams.app sets it for later tests


class _Cluster:
    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return None if tp.partition == 2 else 0


class _Batch:
    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp


class _Accumulator:
    def __init__(self) -> None:
        self._batches = {TopicPartition("kz-changelog", 2): [_Batch(TopicPartition("kz-changelog", 2))],
                         TopicPartition("kz-clean", 0): []}
        self._pending_batches = {_Batch(TopicPartition("kz-clean", 1))}


class _AIOProducer:
    """What the watch reads of an AIOKafkaProducer, with a flush that waits until `acked` is set."""

    def __init__(self) -> None:
        self._message_accumulator = _Accumulator()
        self.client = type("C", (), {"cluster": _Cluster()})()
        self.acked = asyncio.Event()

    async def flush(self) -> None:
        await self.acked.wait()


class _Buffer:
    async def flush(self) -> None:
        return None


def _faust_producer() -> Any:
    fake = object.__new__(faust_aiokafka.Producer)  # the real class's flush, on a stand-in state
    fake.__dict__.update(buffer=_Buffer(), _producer=_AIOProducer(), _transaction_producers={})
    return fake


def test_pending_partitions_names_each_with_its_leader() -> None:
    assert pending_partitions(_AIOProducer()) == ["kz-changelog[2] leader=None", "kz-clean[1] leader=0"]


async def test_a_held_flush_is_reported_and_still_waits_for_the_broker() -> None:
    watch_faust_producer_flushes(every=0.05)
    fake = _faust_producer()
    with capture_logs() as logs:
        flush = asyncio.ensure_future(fake.flush())
        await asyncio.sleep(0.18)
        assert not flush.done()  # nothing is given up: the writes are still waited for
        stalls = [e for e in logs if e["event"] == FLUSH_STALL]
        assert len(stalls) >= 2
        assert stalls[0]["pending"] == ["kz-changelog[2] leader=None", "kz-clean[1] leader=0"]
        fake._producer.acked.set()
        await asyncio.wait_for(flush, 1.0)


async def test_a_quick_flush_says_nothing_and_a_cancelled_one_stops_waiting() -> None:
    watch_faust_producer_flushes(every=0.05)
    fake = _faust_producer()
    fake._producer.acked.set()
    with capture_logs() as logs:
        await asyncio.wait_for(fake.flush(), 1.0)
    assert not [e for e in logs if e["event"] == FLUSH_STALL]
    held = _faust_producer()
    flush = asyncio.ensure_future(held.flush())
    await asyncio.sleep(0.01)
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
    assert flush.cancelled()


def test_watching_again_replaces_the_period_without_nesting() -> None:
    import streams.app  # noqa: F401 - the worker's own watch, at its period

    watch_faust_producer_flushes(every=0.05)
    cls: Any = faust_aiokafka.Producer
    assert cls._kaizen_flush_watched == 0.05
    assert cls._kaizen_original_flush.__qualname__ == "Producer.flush"  # faust's own, not a watch of a watch
