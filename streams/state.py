"""Per-partition state changelogged to Kafka and rebuilt by reading the changelog until it is empty.

Why not Faust tables: on Tansu, ListOffsets(LATEST) reports the base offset of the last batch
+ 1, so Faust's recovery (read up to the high-water mark) silently restores fewer updates than
the changelog holds (docs/embedded-broker.md). kaizen's stores instead read their changelog partition until
two polls in a row come back empty, which is correct on Tansu and on a real Kafka alike.

A store holds one state object per source partition. Every change is recorded as a delta that is
applied in memory and appended (batched: one Kafka message per call) to the store's changelog
partition — the same partition number as the source partition — so a worker that gets the
partition after a restart or a rebalance rebuilds exactly the state its predecessor had.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import InputError

log = structlog.get_logger(__name__)

S = TypeVar("S")
MAX_MESSAGE_BYTES = 900_000  # below the producers' max_request_size (1,000,000); settings.kaizen_max_message_bytes
# How long `record(wait=True)` waits for the broker to acknowledge a delta: more than two of the producer's
# request timeouts (streams/runtime.py PRODUCER_REQUEST_TIMEOUT_SECONDS: a reply that never comes costs one,
# the batch sent again on a new connection another), so only a broker away that long or a wedged producer
# ends it — with ChangelogWriteTimeout, never a wait without end that stops an agent silently.
DELIVERY_TIMEOUT_SECONDS = 75.0


class ChangelogWriteTimeout(TimeoutError):
    """A changelog write the broker did not acknowledge within the store's delivery timeout."""


class OversizedDelta(InputError):
    """Entries of a delta too large for one changelog message even alone: applied in memory, not
    changelogged (the caller says what that costs, e.g. a detector that re-warms after a restart)."""

    def __init__(self, store: str, keys: list[str]) -> None:
        super().__init__(f"store {store}: {len(keys)} entries too large for a changelog message: {keys[:3]}")
        self.keys = keys


def split_delta(delta: Any, limit: int) -> tuple[list[bytes], list[str]]:
    """A delta as changelog messages of at most `limit` bytes each, applied in order giving the same
    state: the largest mapping/list of the delta is halved until each part fits (the other fields — a
    kv delta's deletions — go with the last part, so a key set and deleted in one delta stays deleted).
    Returns the messages and the keys of entries that do not fit a message alone."""
    data = orjson.dumps(delta)
    if len(data) <= limit or not isinstance(delta, dict):
        return [data], []
    field_name, coll = max(((k, v) for k, v in delta.items() if isinstance(v, dict | list)),
                           key=lambda kv: len(kv[1]), default=(None, None))
    if field_name is None or coll is None or len(coll) <= 1:
        keys = list(coll) if isinstance(coll, dict) else [str(field_name)]
        return [], [str(k) for k in keys]
    items = list(coll.items()) if isinstance(coll, dict) else list(coll)
    mid = len(items) // 2
    halves = [items[:mid], items[mid:]]
    rest = {k: v for k, v in delta.items() if k != field_name}
    out: list[bytes] = []
    too_big: list[str] = []
    for i, half in enumerate(halves):
        part = dict(rest) if i == 1 else {k: v for k, v in rest.items() if not isinstance(v, dict | list)}
        part[field_name] = dict(half) if isinstance(coll, dict) else half
        msgs, big = split_delta(part, limit)
        out += msgs
        too_big += big
    return out, too_big


class ChangelogStore(Generic[S]):
    """State per partition: `init()` makes an empty one, `apply(state, delta)` folds a delta in."""

    def __init__(
        self,
        name: str,
        topic: str,
        bootstrap: str,
        partitions: int,
        init: Callable[[], S],
        apply: Callable[[S, Any], None],
        empty_polls: int = 2,
        poll_ms: int = 250,
        source_topic: str | None = None,
        compression: str | None = None,
    ) -> None:
        self.name = name
        self.compression = compression  # the codec of the store's own producer (KAIZEN_PRODUCER_COMPRESSION)
        self.source_topic = source_topic  # whose partitions this store's partitions follow (rebalances)
        self.topic = topic
        self.bootstrap = bootstrap
        self.partitions = partitions
        self._init = init
        self._apply = apply
        self._states: dict[int, S] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._producer: AIOKafkaProducer | None = None
        self._empty_polls = empty_polls
        self._poll_ms = poll_ms
        self.rebuilt_deltas: dict[int, int] = {}
        self.max_message_bytes = MAX_MESSAGE_BYTES
        self.delivery_timeout = DELIVERY_TIMEOUT_SECONDS
        # The Faust app's producer when the store belongs to an agent: Faust flushes it before it commits
        # the source offsets, so a source record is never committed before its state deltas are on the
        # broker (streams/state.py start_agent_store).
        self.app_producer: Any = None

    async def start(self) -> None:
        """Create (or grow) the changelog so it has a partition for every source partition — a source
        topic made elsewhere with more partitions than KAFKA_TOPIC_PARTITIONS would otherwise leave the
        state of its upper partitions unreadable — then start the producer."""
        want = self.partitions
        if self.source_topic is not None:
            want = max(want, await topic_partitions(self.bootstrap, self.source_topic) or 0)
        await ensure_topic(self.bootstrap, self.topic, want, grow=True)
        self.partitions = want
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks=1, linger_ms=5,
                                          max_request_size=1_048_576, compression_type=self.compression)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def loaded(self, partition: int) -> bool:
        return partition in self._states

    def current(self, partition: int) -> S | None:
        """The partition's state if it is loaded (no rebuild), else None."""
        return self._states.get(partition)

    async def state(self, partition: int) -> S:
        """The state of a partition, rebuilt from the changelog the first time it is asked for."""
        st = self._states.get(partition)
        if st is not None:
            return st
        if not 0 <= partition < self.partitions:
            raise ValueError(f"store {self.name}: partition {partition} has no changelog partition "
                             f"({self.topic} has {self.partitions}); restart the worker to grow it")
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            st = self._states.get(partition)
            if st is None:
                st = await self._rebuild(partition)
                self._states[partition] = st
        return st

    def loaded_states(self) -> dict[int, S]:
        return dict(self._states)

    async def record(self, partition: int, delta: Any, wait: bool = False) -> None:
        """Apply a delta in memory and append it to the changelog (one message, or several below the
        message size limit; raises OversizedDelta after the rest is written if an entry cannot fit).
        With `wait`, returns once the broker acknowledged every message; raises ChangelogWriteTimeout if
        it did not within `delivery_timeout` (the message stays with the producer, which may still deliver it)."""
        st = await self.state(partition)
        self._apply(st, delta)
        messages, too_big = split_delta(delta, self.max_message_bytes)
        for data in messages:
            if wait:
                await self._send_acknowledged(data, partition)
            else:
                await self._send(data, partition)
        if too_big:
            raise OversizedDelta(self.name, too_big)

    async def append(self, partition: int, delta: Any) -> list[Any]:
        """Append a delta to the changelog without applying it in memory (state about to be handed over,
        e.g. checkpoints written when a partition is revoked); returns the send futures."""
        messages, too_big = split_delta(delta, self.max_message_bytes)
        futures = [await self._send(data, partition) for data in messages]
        if too_big:
            raise OversizedDelta(self.name, too_big)
        return futures

    async def _send(self, data: bytes, partition: int) -> Any:
        key = b"%d" % partition
        if self.app_producer is not None:
            return await self.app_producer.send(self.topic, key, data, partition, None, None)
        assert self._producer is not None, "store not started"
        return await self._producer.send(self.topic, data, key=key, partition=partition)

    async def _send_acknowledged(self, data: bytes, partition: int) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.delivery_timeout):
                fut = await self._send(data, partition)
                await asyncio.shield(fut)  # the producer's future stays intact for whoever else waits (a flush)
        except TimeoutError:
            waited = time.monotonic() - started
            log.error("changelog write not acknowledged", store=self.name, topic=self.topic, partition=partition,
                      waited_s=round(waited, 1), producer=self._producer_view(partition))
            raise ChangelogWriteTimeout(
                f"store {self.name}: the broker did not acknowledge a write to {self.topic}[{partition}] "
                f"within {waited:.0f} s") from None

    def _producer_view(self, partition: int) -> dict[str, Any]:
        """What the producer knows of the partition, for the log of a write that was not acknowledged: whether
        it knows a leader (no leader: the batch waits for metadata), has a request in flight to the broker (one
        at a time per broker: an unanswered one holds everything back) and how many batches wait."""
        producer = getattr(self.app_producer, "_producer", None) if self.app_producer is not None else self._producer
        try:
            tp = TopicPartition(self.topic, partition)
            client = producer.client  # type: ignore[union-attr]
            return {"leader": client.cluster.leader_for_partition(tp),
                    "partitions_known": sorted(client.cluster.partitions_for_topic(self.topic) or []),
                    "in_flight_nodes": sorted(producer._sender._in_flight),  # type: ignore[union-attr]
                    "queued_batches": len(producer._message_accumulator._batches.get(tp, ())),  # type: ignore[union-attr]
                    "sent_unanswered_batches": len(producer._message_accumulator._pending_batches)}  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a diagnostic only (aiokafka internals)
            return {"unavailable": type(exc).__name__}

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    def forget(self, partitions: set[int] | None = None) -> None:
        """Drop in-memory state of revoked partitions (rebuilt from the changelog if they come back)."""
        for p in list(self._states) if partitions is None else partitions:
            self._states.pop(p, None)

    async def _rebuild(self, partition: int) -> S:
        st = self._init()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        applied = 0
        try:
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            empty = 0
            while empty < self._empty_polls:
                batch = await consumer.getmany(tp, timeout_ms=self._poll_ms, max_records=5000)
                msgs = batch.get(tp, [])
                if not msgs:
                    empty += 1
                    continue
                empty = 0
                for m in msgs:
                    if m.value is not None:
                        self._apply(st, orjson.loads(m.value))
                        applied += 1
        finally:
            await consumer.stop()
        self.rebuilt_deltas[partition] = applied
        log.info("state rebuilt", store=self.name, partition=partition, deltas=applied)
        return st


async def ensure_topic(bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None = None, *,
                       grow: bool = False) -> None:
    """Create a topic if it does not exist (retention set explicitly: Tansu reports only set keys); with
    `grow`, an existing topic with fewer partitions gets more, or a message saying what to do when the
    broker cannot (Tansu 0.6 has no CreatePartitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            if grow:
                await _grow(admin, topic, partitions)
            return
        cfg = {"retention.ms": "604800000", **(config or {})}
        try:
            from streams.settings import get_settings

            rf = get_settings().kafka_replication_factor
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf,
                                                topic_configs=cfg)])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


async def _grow(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    have = _partition_count(await admin.describe_topics([topic]), topic) or partitions
    if have >= partitions:
        return
    advice = (f"recreate {topic} with {partitions} partitions (its state is rebuilt from the source only if "
              f"the source is replayed) and set KAFKA_TOPIC_PARTITIONS={partitions}")
    try:
        resp = await admin.create_partitions({topic: NewPartitions(total_count=partitions)})
    except KafkaError as exc:
        raise RuntimeError(f"could not grow {topic} from {have} to {partitions} partitions: the broker refused "
                           f"({exc.__class__.__name__}); {advice}") from exc
    errors = [e for e in getattr(resp, "topic_errors", []) if e[1]]
    if errors:
        raise RuntimeError(f"could not grow {topic} from {have} to {partitions} partitions: {errors}; {advice}")


def _partition_count(descriptions: list[Any], topic: str) -> int | None:
    for desc in descriptions:
        if desc.get("topic") == topic and not desc.get("error_code"):
            return len(desc.get("partitions", [])) or None
    return None


async def topic_partitions(bootstrap: str, topic: str) -> int | None:
    """How many partitions a topic has, or None if it does not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return _partition_count(await admin.describe_topics([topic]), topic)
    finally:
        await admin.close()


# ---- the two state shapes kaizen uses ----------------------------------------------------------


def kv_init() -> dict[str, Any]:
    return {}


def kv_apply(state: dict[str, Any], delta: dict[str, Any]) -> None:
    """Delta {"set": {key: value}, "del": [key, ...]}: last write wins, like a compacted topic."""
    state.update(delta.get("set", {}))
    for k in delta.get("del", ()):
        state.pop(k, None)


async def start_agent_store(name: str, source_topic: str, init: Callable[[], S] | None = None,
                            apply: Callable[[S, Any], None] | None = None) -> ChangelogStore[S]:
    """The changelog store of one agent of this worker: topic `<app id>.state.<name>`, partitions
    following `source_topic`, started and registered in the runtime so revoked partitions are
    forgotten (kaizen/worker.py). Key-value state unless `init`/`apply` say otherwise."""
    from streams.runtime import runtime
    from streams.settings import get_settings

    if runtime.store_factory is not None:  # the in-process agent harness (streams/testing.py)
        memory: ChangelogStore[Any] = runtime.store_factory(name, init, apply)
        return memory
    settings = get_settings()
    store: ChangelogStore[Any] = ChangelogStore(
        name, f"{settings.kaizen_app_id}.state.{name}", runtime.bootstrap, settings.kafka_topic_partitions,
        init or kv_init, apply or kv_apply, source_topic=source_topic, compression=settings.compression_type)
    await store.start()
    store.max_message_bytes = settings.kaizen_max_message_bytes
    from streams.app import app

    store.app_producer = app.producer
    runtime.stores.append(store)
    return store
