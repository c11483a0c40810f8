"""The metrics tap: recent samples of the components improvements are judged on, read back on watch.

Monitoring compares a component's metrics after a deployment with its baseline before it, whichever
worker scores the component's series. Every worker therefore tails the clean metrics topic itself
(no consumer group) and keeps samples only for the components it watches: those of open or
in-progress opportunities and of running improvements. When a component becomes watched (its
opportunity opens, or the worker starts), what the topic already holds of it for the last
`lookback_seconds` is read back, so an improvement deployed a minute after its opportunity opened
still has a full baseline window, and a restarted worker regains the samples it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import NamedTuple

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.improvement.logic.verdicts import ERROR_RATE_METRICS, LATENCY_METRICS, THROUGHPUT_METRICS
from streams import topics as T
from streams.metric_codec import trusted_lean
from streams.views import StateViews, TopicTail

log = structlog.get_logger(__name__)
WATCHED_METRICS = LATENCY_METRICS | ERROR_RATE_METRICS | THROUGHPUT_METRICS
MAX_BYTE_FILTERS = 32  # beyond this many watched components, parsing beats one byte search per component
# A read-back stops after this many bytes or seconds (a busy topic's lookback window can be large;
# what was read by then is kept and the stop is logged).
READ_BACK_MAX_BYTES = 512 * 1024 * 1024
READ_BACK_MAX_SECONDS = 60.0

Key = tuple[str, str]  # (tenant, component)


class Sample(NamedTuple):
    """One watched metric value: all the monitoring verdicts need (small: the tap keeps many)."""

    metric_name: str
    value: float
    variant: str | None
    unit: str = "None"  # canonical (streams/units.py): the verdicts read ratios through it


def needles(keys: set[Key]) -> tuple[bytes, ...]:
    """The components' names as they appear in a message's bytes (JSON-escaped; orjson writes
    non-ASCII as is)."""
    return tuple({orjson.dumps(c) for _t, c in keys})


def samples_of(value: bytes, keys: set[Key] | None, filters: tuple[bytes, ...] = ()
               ) -> Iterator[tuple[Key, float, Sample]]:
    """The watched samples of one clean-topic message (of `keys`, or of every component if None).
    With `filters`, a message none of whose bytes name a watched component is not even parsed."""
    if filters and not any(n in value for n in filters):
        return
    obj = orjson.loads(value)
    items = obj.get("records", [obj]) if isinstance(obj, dict) else []
    for it in items:
        if type(it) is not dict or it.get("metric_name") not in WATCHED_METRICS:
            continue
        p = trusted_lean(it)  # dedup writes lean points: no model to build per sample
        if p is None:
            continue
        k = (p["tenant_id"], p["component"])
        if keys is not None and k not in keys:
            continue
        yield k, float(p["timestamp"]), Sample(p["metric_name"], float(p["value"]), p["dimensions"].get("variant"),
                                               str(p.get("unit", "None")))


async def read_back(bootstrap: str, until: dict[TopicPartition, int], since_ms: int,
                    on_value: Callable[[TopicPartition, int, bytes], None], max_bytes: int = READ_BACK_MAX_BYTES,
                    max_seconds: float = READ_BACK_MAX_SECONDS) -> dict[str, int | bool]:
    """Hand `on_value` every record of the partitions in `until` stamped since `since_ms` and before the
    partition's offset in `until`. Returns what was read. (Tansu stamps records when it appends them,
    whatever time the producer gave; Kafka keeps the producer's time by default.)"""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    stats: dict[str, int | bool] = {"records": 0, "bytes": 0, "complete": True}
    try:
        found = await consumer.offsets_for_times(dict.fromkeys(until, since_ms))
        todo: dict[TopicPartition, int] = {}
        for tp, cut in until.items():
            hit = found.get(tp)
            # Kafka answers None when nothing is that recent; Tansu answers offset 0 with timestamp -1.
            if hit is not None and hit.timestamp >= 0 and hit.offset < cut:
                todo[tp] = cut
        if not todo:
            return stats
        consumer.assign(list(todo))
        for tp in todo:
            consumer.seek(tp, found[tp].offset)
        started, empty = time.monotonic(), 0
        while todo:
            if stats["bytes"] >= max_bytes or time.monotonic() - started > max_seconds:
                stats["complete"] = False
                break
            batch = await consumer.getmany(*todo, timeout_ms=300, max_records=2000)
            empty = 0 if batch else empty + 1
            if empty >= 5:  # nothing more arrives below the cut (records removed meanwhile)
                break
            for tp, msgs in batch.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for m in msgs:
                    if m.offset >= end:
                        break
                    if m.value is not None:
                        stats["records"] += 1
                        stats["bytes"] += len(m.value)
                        on_value(tp, m.offset, m.value)
                if msgs and msgs[-1].offset + 1 >= end:
                    del todo[tp]
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return stats


class MetricsTap:
    """Recent samples of the watched signals per (tenant, component), from telemetry.metrics.

    Only components an improvement may be judged on are kept (`watch`: the StateViews whose
    watched_components are those of open/in-progress opportunities and running improvements), so the
    tap costs nothing for the bulk of the stream: a message none of whose bytes name a watched
    component is not even parsed, and memory is bounded by `per_key` samples per watched component
    (latency, error rate and throughput together). With `lookback_seconds`, a newly watched
    component's samples of that long ago are read back from the topic. Without `watch` every
    component is kept (from the end of the topic on).
    """

    def __init__(self, bootstrap: str, per_key: int = 600, watch: StateViews | None = None,
                 lookback_seconds: float = 0.0) -> None:
        self.bootstrap = bootstrap
        self.per_key = per_key
        self.samples: dict[Key, deque[tuple[float, Sample]]] = defaultdict(lambda: deque(maxlen=per_key))
        self.lookback_seconds = lookback_seconds
        self._watch = watch
        self._seen_version = -1
        self._refreshed = 0.0
        self.watched: set[Key] | None = None
        self._needles: tuple[bytes, ...] = ()
        self._pending: dict[Key, dict[TopicPartition, int]] = {}  # keys to read back, each with its cut
        self._reader: asyncio.Task[None] | None = None
        self._reading: set[Key] = set()  # keys of the read-back under way
        self.read_back_samples = 0
        self.read_back_passes = 0
        # The watch list is refreshed as records arrive, and between polls when none do (a quiet topic still
        # gets a newly watched component's samples read back).
        self.tail = TopicTail(bootstrap, [T.CLEAN_TOPICS["metric"]], self._on, from_end=True,
                              on_idle=self._refresh_watch)

    async def start(self) -> None:
        await self.tail.start()
        self._refresh_watch(force=True)  # what is watched already is read back now, not on the next record

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.tail.stop()

    async def settled(self) -> None:
        """Wait until no read-back is under way or waiting (tests, and callers that need a full window)."""
        while self.tail.resuming or (self._reader is not None and not self._reader.done()):
            if self._reader is not None and not self._reader.done():
                await asyncio.gather(self._reader, return_exceptions=True)
            else:  # the tail goes back to the end first (at its next poll, within 0.2 s), then reads back
                await asyncio.sleep(0.05)

    def _refresh_watch(self, force: bool = False) -> None:
        if self._watch is None:
            return
        version = self._watch.version
        now = time.monotonic()
        if not force and (version == self._seen_version
                          or (self.watched is not None and now - self._refreshed < 0.5)):
            return  # at most twice a second: the views change per record while they catch up
        self._seen_version, self._refreshed = version, now
        before = self.watched or set()
        self.watched = self._watch.watched_components()
        self._needles = needles(self.watched)
        for key in [k for k in self.samples if k not in self.watched]:
            del self.samples[key]
        added = self.watched - before
        if self.tail.paused:
            if self.watched:  # watched again: the tail goes to the end, the window before it is read back
                self.tail.resume_at_end(self._after_resume)
            return
        if not self.watched:
            # Nothing watched: the clean topic is not even fetched (≈ 1.2 µs of a worker's CPU per point,
            # docs/throughput.md); a component watched later gets its window by read-back, as any does.
            self.tail.pause()
            return
        if added and self.lookback_seconds > 0 and self.tail.positions:
            self._queue_read_back(added)

    def _after_resume(self) -> None:
        """The tail is at the end again after a pause: every component watched now was added meanwhile."""
        if self.watched and self.lookback_seconds > 0:
            self._queue_read_back(set(self.watched))

    def _queue_read_back(self, keys: set[Key]) -> None:
        """Read the topic back for `keys`, each up to where the live tail is now (it takes over from there).

        One read-back runs at a time and takes every key queued meanwhile, so components that become
        watched one after another cost one pass over the topic's recent records, not one pass each."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not running (a unit test feeding records by hand)
        cut = dict(self.tail.positions)
        for key in keys:
            self._pending[key] = cut  # a key re-watched while waiting takes the newer cut
        if self._reader is None or self._reader.done():
            self._reader = loop.create_task(self._read_pending())

    async def _read_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            self._reading = set(batch)
            try:
                await self._read_back(batch, int((time.time() - self.lookback_seconds) * 1000))
            finally:
                self._reading = set()

    async def _read_back(self, cuts: dict[Key, dict[TopicPartition, int]], since_ms: int) -> None:
        keys = set(cuts)
        self.read_back_passes += 1
        until: dict[TopicPartition, int] = {}
        for cut in cuts.values():
            for tp, offset in cut.items():
                until[tp] = max(offset, until.get(tp, 0))
        found: dict[Key, list[tuple[float, Sample]]] = defaultdict(list)
        filters = needles(keys) if len(keys) <= MAX_BYTE_FILTERS else ()
        since_s = since_ms / 1000

        def collect(tp: TopicPartition, offset: int, value: bytes) -> None:
            try:
                for k, ts, smp in samples_of(value, keys, filters):
                    # before the key's own cut (the live tail has the rest), and recent in event time too:
                    # an old point replayed lately is no baseline
                    if offset < cuts[k].get(tp, 0) and ts >= since_s:
                        found[k].append((ts, smp))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("metrics tap read-back skipped a record", error=str(exc)[:200])

        try:
            stats = await read_back(self.bootstrap, until, since_ms, collect)
        except (KafkaError, OSError, TimeoutError) as exc:  # the live samples stay; say why there are no more
            log.warning("metrics tap read-back failed", components=sorted(c for _t, c in keys), error=str(exc))
            return
        merged = 0
        for k, older in found.items():
            if self.watched is None or k not in self.watched or k in self._pending:
                continue  # unwatched meanwhile, or re-watched and waiting for a read-back of its own
            window = deque(older, maxlen=self.per_key)
            window.extend(self.samples.get(k, ()))  # the live samples come after the read-back's cut
            self.samples[k] = window
            merged += len(older)
        self.read_back_samples += merged
        log.info("metrics tap read back", components=len(keys), samples=merged, **stats)

    def _on(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._refresh_watch()
        watched = self.watched
        filters = self._needles if watched is not None and len(self._needles) <= MAX_BYTE_FILTERS else ()
        if watched is not None and not watched:
            return
        for k, ts, smp in samples_of(value, watched, filters):
            self.samples[k].append((ts, smp))

    def window(self, tenant: str, component: str, since: float, until: float | None = None,
               variant: str | None = None) -> list[Sample]:
        """Samples with event time in [since, until), optionally of one deployment variant (the stable
        view excludes canary traffic)."""
        out: list[Sample] = []
        for ts, smp in self.samples.get((tenant, component), ()):
            if ts < since or (until is not None and ts >= until):
                continue
            if variant is None and smp.variant == "canary":
                continue
            if variant is not None and smp.variant != variant:
                continue
            out.append(smp)
        return out

    def reading(self, tenant: str, component: str) -> bool:
        """Whether the component's recent samples are still being read back (or waiting to be): until then
        the tap holds only what arrived live, not the window before."""
        key = (tenant, component)
        if self.tail.resuming and self.watched is not None and key in self.watched:
            return True  # the tail is going back to the end after a pause; the read-back follows (_after_resume)
        return key in self._pending or key in self._reading

    def newest(self, tenant: str, component: str) -> float | None:
        """The latest event time of the component's samples (any variant): how far its telemetry has arrived."""
        return max((ts for ts, _smp in self.samples.get((tenant, component), ())), default=None)

    def has_variant(self, tenant: str, component: str, variant: str, since: float) -> bool:
        return any(smp.variant == variant and ts >= since for ts, smp in self.samples.get((tenant, component), ()))
