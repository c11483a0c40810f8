"""A changelog write that waits for the broker's acknowledgement waits a bounded time, never without end.

The failure this guards against: a produce reply the broker never sent left `record(wait=True)` of the
improvements agent waiting for 20 minutes (Faust's producer request timeout) with no error, so the agent
processed nothing more (streams/state.py, streams/runtime.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.runtime import PRODUCER_REQUEST_TIMEOUT_SECONDS, bound_faust_producer_requests, bound_requests
from streams.state import ChangelogStore, ChangelogWriteTimeout, kv_apply, kv_init


class FakeAppProducer:
    """Faust's producer interface as the store uses it: `send` returns the delivery future."""

    def __init__(self, deliver: bool = False, hang_in_send: bool = False) -> None:
        self.deliver = deliver
        self.hang_in_send = hang_in_send
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int, timestamp: Any, headers: Any) -> Any:
        if self.hang_in_send:  # e.g. a full buffer behind a request that is never answered
            await asyncio.Event().wait()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.deliver:
            fut.set_result(None)
        self.futures.append(fut)
        return fut


def _store(producer: FakeAppProducer, timeout: float) -> ChangelogStore[dict[str, Any]]:
    s: ChangelogStore[dict[str, Any]] = ChangelogStore("improvements", "kz.state.improvements", "127.0.0.1:1", 4,
                                                       kv_init, kv_apply)
    s._states[0] = {}  # loaded: no rebuild from a broker
    s.app_producer = producer
    s.delivery_timeout = timeout
    return s


async def test_a_write_never_acknowledged_raises_within_the_bound_and_keeps_the_state() -> None:
    producer = FakeAppProducer()
    s = _store(producer, 0.3)
    started = time.monotonic()
    with pytest.raises(ChangelogWriteTimeout, match="did not acknowledge"):
        await asyncio.wait_for(s.record(0, {"set": {"imp-1": {"status": "deploying"}}}, wait=True), 5)
    assert 0.25 <= time.monotonic() - started < 2
    assert (await s.state(0)) == {"imp-1": {"status": "deploying"}}  # applied in memory before the write
    assert not producer.futures[0].cancelled()  # still the producer's: a flush or a late reply completes it


async def test_a_send_that_never_returns_raises_within_the_bound() -> None:
    s = _store(FakeAppProducer(hang_in_send=True), 0.3)
    with pytest.raises(ChangelogWriteTimeout):
        await asyncio.wait_for(s.record(0, {"set": {"k": 1}}, wait=True), 5)


async def test_acknowledged_writes_and_writes_not_waited_for_return_at_once() -> None:
    s = _store(FakeAppProducer(deliver=True), 0.3)
    await asyncio.wait_for(s.record(0, {"set": {"k": 1}}, wait=True), 1)
    pending = _store(FakeAppProducer(), 0.3)
    await asyncio.wait_for(pending.record(0, {"set": {"k": 1}}), 1)  # no wait: the future stays pending


async def test_a_changelog_write_timeout_is_a_timeout_the_periodic_tasks_survive() -> None:
    from streams.runtime import survives_broker_outage

    @survives_broker_outage
    async def tick() -> None:
        raise ChangelogWriteTimeout("store x: not acknowledged")

    await tick()  # logged and retried at the next tick, not a crashed timer


async def test_bounded_requests_keep_the_batch_expiry() -> None:
    p = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", request_timeout_ms=1_200_000)
    bound_requests(p, 2.5)
    assert p.client._request_timeout_ms == 2500  # each request: its reply within 2.5 s, else a new connection
    assert p._request_timeout_ms == 1_200_000  # a batch is retried that long (a broker away loses nothing)


async def test_the_workers_faust_producer_has_bounded_requests() -> None:
    from streams import app as A

    bound_faust_producer_requests()  # idempotent: streams/app.py applied it at import
    faust_producer: Any = A.app.producer
    p = faust_producer._new_producer()
    assert p.client._request_timeout_ms == int(PRODUCER_REQUEST_TIMEOUT_SECONDS * 1000)
    assert p._request_timeout_ms == int(A.app.conf.producer_request_timeout * 1000)
