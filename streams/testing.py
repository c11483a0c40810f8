"""In-process harness for agents: feed records to an agent, collect what it sends — no broker.

In the spirit of Bytewax's TestingSource / TestingSink: a test that is about an agent's logic (what it
emits for given input, what its state holds after a restart) runs in milliseconds, while tests that are
about Kafka behaviour (offsets, rebalances, changelog recovery on the real broker) stay integration tests.

    async with AgentHarness() as h:
        await h.feed(opportunities_agent.opportunities, [insight.to_bytes()], partition=2)
        opps = h.records(topics.OPPORTUNITIES, ImprovementOpportunity)
        h.restart()   # every store forgets its memory and is rebuilt from its recorded deltas

What it replaces: every topic object of `streams.app` gets a capturing `send`, and `start_agent_store`
hands out `MemoryStore`s (the same fold as `ChangelogStore`, deltas kept in a list per partition instead
of a changelog topic). The agent's own code — decode, logic, state deltas, sends — runs unchanged.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from faust.topics import Topic

from streams import app as A
from streams.records import Record
from streams.runtime import runtime
from streams.state import ChangelogStore, kv_apply, kv_init

R = TypeVar("R", bound=Record)
S = TypeVar("S")


class MemoryStore(ChangelogStore[S]):
    """A ChangelogStore whose changelog is a list per partition: same fold, same rebuild, no broker."""

    def __init__(self, name: str, partitions: int, init: Callable[[], S], apply: Callable[[S, Any], None]) -> None:
        super().__init__(name, f"memory.state.{name}", "memory", partitions, init, apply)
        self.changelog: dict[int, list[bytes]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def record(self, partition: int, delta: Any, wait: bool = False) -> None:
        st = await self.state(partition)
        self._apply(st, delta)
        # Encoded like the real store, so a delta that does not survive JSON fails here too.
        self.changelog[partition].append(orjson.dumps(delta))

    async def append(self, partition: int, delta: Any) -> list[Any]:
        """The delta recorded without applying it in memory (as ChangelogStore.append)."""
        self.changelog[partition].append(orjson.dumps(delta))
        return []

    async def flush(self) -> None:
        return None

    async def _rebuild(self, partition: int) -> S:
        st = self._init()
        for raw in self.changelog.get(partition, []):
            self._apply(st, orjson.loads(raw))
        self.rebuilt_deltas[partition] = len(self.changelog.get(partition, []))
        return st


class AgentHarness:
    """Captures every send of the app's topics and serves in-memory stores while active."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.sent: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        self.stores: list[MemoryStore[Any]] = []
        self._patched: list[Topic] = []
        self._previous_factory: Any = None

    def _store_factory(self, name: str, init: Callable[[], Any] | None,
                       apply: Callable[[Any, Any], None] | None) -> MemoryStore[Any]:
        store: MemoryStore[Any] = MemoryStore(name, self.partitions, init or kv_init, apply or kv_apply)
        self.stores.append(store)
        return store

    async def __aenter__(self) -> AgentHarness:
        topics = [*vars(A).values(), *A.raw_topics.values(), *A.clean_topics.values()]  # (telemetry: per kind)
        for value in topics:
            if isinstance(value, Topic) and "send" not in vars(value):
                value.send = self._capture(value.get_topic_name())  # type: ignore[method-assign]
                self._patched.append(value)
        self._previous_factory = runtime.store_factory
        runtime.store_factory = self._store_factory
        return self

    async def __aexit__(self, *exc: object) -> None:
        for topic in self._patched:
            del topic.send  # back to the class's send
        self._patched.clear()
        runtime.store_factory = self._previous_factory

    def _capture(self, name: str) -> Callable[..., Any]:
        async def send(key: bytes | str | None = None, value: bytes | None = None, **_: Any) -> asyncio.Future[None]:
            k = key.encode() if isinstance(key, str) else key
            self.sent[name].append((k, value if value is not None else b""))
            delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            delivered.set_result(None)  # as Faust's send: a future of the delivery (here at once)
            return delivered
        return send

    async def feed(self, agent: Any, values: Iterable[bytes | Record], partition: int = 0,
                   key: bytes | None = None) -> None:
        """Run `agent` (a faust agent) over `values`, each delivered on `partition`, until all are processed."""
        async with agent.test_context() as wrapped:
            for v in values:
                raw = v.to_bytes() if isinstance(v, Record) else v
                await wrapped.put(value=raw, key=key, partition=partition)

    def values(self, topic: str) -> list[bytes]:
        return [v for _, v in self.sent.get(topic, [])]

    def records(self, topic: str, model: type[R]) -> list[R]:
        return [model.from_bytes(v) for v in self.values(topic)]

    def restart(self) -> None:
        """What a worker restart does to state: memory forgotten, rebuilt from the recorded deltas."""
        for store in self.stores:
            store.forget()
