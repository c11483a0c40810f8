"""The read model: one group-less aiokafka consumer materialising every partition of the state topics."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from mcp_server.views import StateTopics, Views
from streams import topics as t
from streams.epoch import BrokerEpoch, safe_check

log = structlog.get_logger(__name__)


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int, replication: int = 1) -> None:
    """Create the topics that do not exist yet with their declared config (idempotent)."""
    specs = {s.name: s for s in t.TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, replication, topic_configs=dict(specs[n].config) if n in specs else {})
               for n in names if n not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # created meanwhile by another process: fine
    finally:
        await admin.close()


class ReadModel:
    """Materialises the state topics into `views` and keeps tailing them.

    No consumer group: every partition is assigned by hand, so the view is complete whichever
    worker owns which partition, and adding or restarting workers changes nothing here. The
    initial load reads until a poll comes back empty (Tansu's end offsets are wrong, so the
    high-water mark is not trusted); `loaded` is set then. New partitions are picked up by a
    periodic metadata refresh.
    """

    def __init__(self, bootstrap: str, topics: Iterable[str] = StateTopics, *, partitions: int = 4,
                 poll_ms: int = 300, refresh_seconds: float = 5.0, epoch_seconds: float = 2.0) -> None:
        self.bootstrap = bootstrap
        self.topics = tuple(topics)
        self.partitions = partitions
        self.poll_ms = poll_ms
        self.refresh_seconds = refresh_seconds
        self.views = Views()
        self.loaded = asyncio.Event()
        self.changed = asyncio.Condition()
        self.last_poll_ok: float | None = None
        self.last_error = ""
        self.load_seconds: float | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._assigned: set[TopicPartition] = set()
        # A broker that comes back empty (or loses topics) is noticed here within epoch_seconds and the
        # read model starts over from the new logs' beginnings (streams/epoch.py).
        self.epoch = BrokerEpoch(bootstrap, who="mcp-readmodel")
        self.epoch_seconds = epoch_seconds
        self._epoch_task: asyncio.Task[None] | None = None
        self._reset_pending = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, wait_loaded: float | None = 30.0) -> None:
        await ensure_topics(self.bootstrap, self.topics, self.partitions)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=f"kaizen-readmodel-{uuid.uuid4().hex[:8]}",
            metadata_max_age_ms=int(self.refresh_seconds * 1000),
        )
        await self._consumer.start()
        await self._refresh_assignment()
        self._task = asyncio.create_task(self._run(), name="kaizen-readmodel")
        self._epoch_task = asyncio.create_task(self._watch_epoch(), name="kaizen-readmodel-epoch")
        if wait_loaded:
            await asyncio.wait_for(self.loaded.wait(), wait_loaded)

    async def stop(self) -> None:
        if self._epoch_task is not None:
            self._epoch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._epoch_task
            self._epoch_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def broker_reachable(self) -> bool:
        return self.last_poll_ok is not None and time.monotonic() - self.last_poll_ok < 10.0

    @property
    def resets(self) -> list[dict[str, Any]]:
        return list(self.epoch.resets)

    async def _watch_epoch(self) -> None:
        while True:
            if await safe_check(self.epoch) is not None:
                self._reset_pending = True
            await asyncio.sleep(self.epoch_seconds)

    async def _start_over(self) -> None:
        """After a reset: the state topics again (nobody may have re-created them yet) and every
        partition from its new beginning — a position kept from the old log would skip the new records."""
        consumer = self._consumer
        assert consumer is not None
        self._reset_pending = False
        await ensure_topics(self.bootstrap, self.topics, self.partitions)
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh in aiokafka
        self._assigned = set()
        await self._refresh_assignment()
        if self._assigned:
            await consumer.seek_to_beginning(*self._assigned)
        log.warning("read model starts over after a broker reset", partitions=len(self._assigned))

    # ------------------------------------------------------------------ consuming
    async def _refresh_assignment(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        wanted: set[TopicPartition] = set()
        for topic in self.topics:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh in aiokafka
                parts = consumer.partitions_for_topic(topic) or set()
            wanted |= {TopicPartition(topic, p) for p in parts}
        if wanted == self._assigned:
            return
        kept = sorted(self._assigned & wanted)
        positions = dict(zip(kept, await asyncio.gather(*(consumer.position(tp) for tp in kept)), strict=True))
        consumer.assign(sorted(wanted))  # new partitions start at the earliest offset (no group, no commits)
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        if self._assigned:
            log.info("read model picked up new partitions", added=len(wanted - self._assigned))
        self._assigned = wanted

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        started = time.monotonic()
        next_refresh = started + self.refresh_seconds
        while True:
            if self._reset_pending:
                try:
                    await self._start_over()
                except KafkaError as exc:
                    self._reset_pending = True
                    self.last_error = f"start over after reset: {exc}"
                    await asyncio.sleep(1.0)
                    continue
            try:
                batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=5000)
                self.last_poll_ok = time.monotonic()
                self.last_error = ""
            except KafkaError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("read model poll failed", error=self.last_error)
                await asyncio.sleep(1.0)
                continue
            n = 0
            for tp, msgs in batches.items():
                for m in msgs:
                    self.views.apply(tp.topic, m.key, m.value)
                    n += 1
            if n:
                async with self.changed:
                    self.changed.notify_all()
            elif not self.loaded.is_set():
                self.load_seconds = time.monotonic() - started
                self.loaded.set()
                log.info("read model loaded", records=self.views.records_applied, seconds=self.load_seconds)
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self.refresh_seconds
                try:
                    await self._refresh_assignment()
                except KafkaError as exc:
                    self.last_error = f"metadata refresh: {exc}"

    async def wait_for(self, predicate: Callable[[Views], Any], timeout: float) -> Any:
        """Wait (bounded) until predicate(views) is truthy; returns its value, or None on timeout."""
        deadline = time.monotonic() + timeout
        async with self.changed:
            while True:
                value = predicate(self.views)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), left)
