"""A produce request the broker never answers, through a proxy in front of a real Tansu.

Seen once in the one-worker equivalence run: the worker's Faust producer sent a request that got no reply,
and as aiokafka keeps one produce request in flight per broker and Faust sets its request timeout to 1200 s,
nothing the worker produced was delivered for 20 minutes — the offset commits' producer flush and the
improvements agent's acknowledged changelog write waited all that time without an error. Here the proxy
stops answering a connection once a produce request passes: the producer as Faust configures it hangs,
with the worker's bound (streams/runtime.py) it sends again on a new connection, and a store write waiting
for the acknowledgement ends with ChangelogWriteTimeout (streams/state.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from kaizen.embedded import ManagedProcess, _spawn, _wait_for_port, free_port, tansu_binary
from streams.runtime import bound_requests
from streams.state import ChangelogStore, ChangelogWriteTimeout, ensure_topic, kv_apply, kv_init
from tests.kafka_utils import ARTIFACTS

FAUST_REQUEST_TIMEOUT_MS = 1_200_000  # Faust's producer_request_timeout (the worker's app producer)


class MuteProxy:
    """Forwards Kafka connections; once armed, the next connection a produce request passes through gets no
    more replies (the broker's bytes are dropped) while the connection stays open."""

    def __init__(self, port: int, broker_port: int) -> None:
        self.port, self.broker_port = port, broker_port
        self.armed = False
        self.muted = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        breader, bwriter = await asyncio.open_connection("127.0.0.1", self.broker_port)
        mute = False

        async def up() -> None:
            nonlocal mute
            while True:
                head = await creader.readexactly(4)
                body = await creader.readexactly(int.from_bytes(head, "big", signed=True))
                if int.from_bytes(body[:2], "big", signed=True) == 0 and self.armed:  # api key 0: Produce
                    self.armed, mute = False, True
                    self.muted += 1
                bwriter.write(head + body)
                await bwriter.drain()

        async def down() -> None:
            while data := await breader.read(65536):
                if not mute:
                    cwriter.write(data)
                    await cwriter.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        self._tasks.update(tasks)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
            self._tasks.discard(t)
        for w in (cwriter, bwriter):
            w.close()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[MuteProxy, str]]:
    """Tansu advertising the proxy's address, so every connection of a client goes through the proxy."""
    broker_port, proxy_port = free_port(), free_port()
    log_dir = ARTIFACTS / "logs" / "lost-produce-reply"
    log_dir.mkdir(parents=True, exist_ok=True)
    proc = _spawn([tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{broker_port}",
                   "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}", "--storage-engine",
                   "memory://tansu/"], Path(log_dir) / "tansu.log", env={"RUST_LOG": "warn"})
    broker = ManagedProcess("tansu", proc, broker_port)
    proxy = MuteProxy(proxy_port, broker_port)
    try:
        _wait_for_port(broker_port, proc, "Tansu broker", 20)
        await proxy.start()
        yield proxy, f"127.0.0.1:{proxy_port}"
    finally:
        await proxy.stop()
        broker.stop()


async def _producer(bootstrap: str, bound: float | None) -> AIOKafkaProducer:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, request_timeout_ms=FAUST_REQUEST_TIMEOUT_MS)
    if bound is not None:
        bound_requests(p, bound)
    await p.start()
    await p.send_and_wait("lost-reply-warmup", b"x")  # metadata known, connection up
    return p


async def _topic(bootstrap: str) -> str:
    topic = f"lost-reply-{uuid.uuid4().hex[:6]}"
    await ensure_topic(bootstrap, topic, 1)
    return topic


async def test_unanswered_produce_request_hangs_the_producer_as_faust_configures_it(
        proxied: tuple[MuteProxy, str]) -> None:
    proxy, bootstrap = proxied
    topic = await _topic(bootstrap)
    p = await _producer(bootstrap, bound=None)
    try:
        proxy.armed = True
        fut = await p.send(topic, b"v", partition=0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), 6)  # Faust's producer would wait 1200 s
        assert proxy.muted == 1
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(p.stop(), 2)


async def test_bounded_requests_deliver_on_a_new_connection(proxied: tuple[MuteProxy, str]) -> None:
    proxy, bootstrap = proxied
    topic = await _topic(bootstrap)
    p = await _producer(bootstrap, bound=2.0)
    try:
        proxy.armed = True
        started = time.monotonic()
        fut = await p.send(topic, b"v", partition=0)
        meta = await asyncio.wait_for(fut, 15)
        assert proxy.muted == 1 and meta.offset >= 0
        assert 1.5 <= time.monotonic() - started < 10  # one request timeout, then the batch sent again
        await asyncio.wait_for(p.flush(), 5)
    finally:
        await p.stop()


async def test_an_acknowledged_store_write_ends_with_an_error_not_a_hang(proxied: tuple[MuteProxy, str]) -> None:
    proxy, bootstrap = proxied
    topic = await _topic(bootstrap)
    p = await _producer(bootstrap, bound=None)

    class AppProducer:  # Faust's Producer.send signature over the aiokafka producer
        _producer = p

        async def send(self, topic: str, key: bytes, value: bytes, partition: int, ts: Any, headers: Any) -> Any:
            return await p.send(topic, value, key=key, partition=partition)

    store: ChangelogStore[dict[str, Any]] = ChangelogStore("t", topic, bootstrap, 1, kv_init, kv_apply)
    store._states[0] = {}
    store.app_producer = AppProducer()
    store.delivery_timeout = 3.0
    try:
        proxy.armed = True
        started = time.monotonic()
        with pytest.raises(ChangelogWriteTimeout):
            await store.record(0, {"set": {"imp": "deploying"}}, wait=True)
        assert time.monotonic() - started < 6
        view = store._producer_view(0)  # what the error log says: the leader is known, a request is in flight
        assert view["leader"] is not None and view["in_flight_nodes"], view
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(p.stop(), 2)
