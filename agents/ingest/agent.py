"""Dedup agents: raw telemetry → validated, deduplicated telemetry (bad records → dead letters)."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

import faust
import structlog
from aiokafka.errors import KafkaError

from agents.ingest.logic.dedup import (
    DedupWindow,
    apply_dedup_delta,
    dedup_delta,
    id_hash,
    make_window_factory,
    warm,
)
from streams import app as A
from streams.codec import (
    dead_letter,
    decode_metrics_lean,
    decode_telemetry,
    encode_envelope,
    encode_lean,
    split_encoded,
)
from streams.contract import Limits
from streams.metrics import DEADLETTERS, DUPLICATES_DROPPED, TELEMETRY_PROCESSED
from streams.records import DeadLetter
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)
STATS: dict[str, Any] = {"processed": defaultdict(int), "duplicates": defaultdict(int), "deadletters": defaultdict(int)}
LIMITS = Limits.from_settings(A.settings)


def output_key(kind: str, rec: Any) -> str:
    """What the clean topic is partitioned by: the series for metrics (one detector per series
    lives on one worker; metrics are lean points, see streams/metric_codec.py), tenant and log
    group for logs, tenant for events."""
    if kind == "metric":
        return str(rec["series"])
    if kind == "log":
        return f"{rec.tenant_id}|{rec.log_group}"
    return str(rec.tenant_id)


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


async def start_dedup_store(kind: str) -> ChangelogStore[DedupWindow]:
    warm()
    return await start_agent_store(f"dedup.{kind}", A.raw_topics[kind].get_topic_name(),
                                   make_window_factory(A.settings.cloudwatch_event_dedup_window_seconds),
                                   apply_dedup_delta)


async def process_raw(kind: str, value: bytes | None, partition: int, offset: int,
                      store: ChangelogStore[DedupWindow], now: float
                      ) -> tuple[dict[int, list[Any]], dict[str, Any] | None]:
    """Decode, dead-letter, dedup one raw message: the fresh records grouped by output partition, and
    the dedup delta admitting them — already applied in memory, to be changelogged by the caller once
    the records are on the broker (see persist_after)."""
    topic_name = A.raw_topics[kind].get_topic_name()
    if kind == "metric":  # the hot path: lean points, not models
        decoded = decode_metrics_lean(value, topic=topic_name, partition=partition, offset=offset, now=now,
                                      limits=LIMITS)
    else:
        decoded = decode_telemetry(kind, value, topic=topic_name, partition=partition, offset=offset, now=now,
                                   limits=LIMITS)
    for dead in decoded.dead:
        await send_dead_letter(kind, dead)
    if not decoded.records:
        return {}, None
    window = await store.state(partition)
    lean = kind == "metric"
    hashes = [id_hash(r["event_id"] if lean else r.event_id) for r in decoded.records]
    fresh_flags = window.filter_new(hashes, now)
    out: dict[int, list[Any]] = defaultdict(list)
    fresh_hashes: list[int] = []
    nparts = A.settings.kafka_topic_partitions
    for rec, h, fresh in zip(decoded.records, hashes, fresh_flags, strict=True):
        if not fresh:
            tenant = rec["tenant_id"] if lean else rec.tenant_id
            DUPLICATES_DROPPED.labels(tenant, kind).inc()
            STATS["duplicates"][f"{tenant}/{kind}"] += 1
            continue
        fresh_hashes.append(h)
        out[partition_for(output_key(kind, rec), nparts)].append(rec)
    delta = None
    if fresh_hashes:
        delta = dedup_delta(fresh_hashes, now)
        apply_dedup_delta(window, delta)  # later copies in this worker are dropped from now on
    TELEMETRY_PROCESSED.labels(kind).inc(len(fresh_hashes))
    STATS["processed"][kind] += len(fresh_hashes)
    return out, delta


async def send_dead_letter(kind: str, dead: DeadLetter) -> None:
    await A.deadletter_topic.send(key=dead.source_topic.encode(), value=dead.to_bytes())
    DEADLETTERS.labels(kind).inc()
    STATS["deadletters"][kind] += 1


async def send_clean(kind: str, groups: dict[int, list[Any]], partition: int, offset: int) -> list[Awaitable[Any]]:
    """The fresh records out, each partition's in messages below KAIZEN_MAX_MESSAGE_BYTES; a record too
    large for a message even alone is dead-lettered (never dropped)."""
    encode = encode_lean if kind == "metric" else encode_envelope
    sends: list[Awaitable[Any]] = []
    for part, recs in groups.items():
        messages, too_big = split_encoded(recs, encode, A.settings.kaizen_max_message_bytes)
        for data in messages:
            sends.append(await A.clean_topics[kind].send(value=data, partition=part))
        for rec in too_big:
            body = encode([rec])
            await send_dead_letter(kind, dead_letter(
                f"record too large: its clean form is {len(body)} bytes, more than KAIZEN_MAX_MESSAGE_BYTES "
                f"({A.settings.kaizen_max_message_bytes})", body.decode("utf-8", errors="backslashreplace"),
                source_topic=A.raw_topics[kind].get_topic_name(), partition=partition, offset=offset))
    return sends


_pending: set[asyncio.Task[None]] = set()


async def persist_after(store: ChangelogStore[DedupWindow], partition: int, delta: dict[str, Any],
                        sends: list[Awaitable[Any]], applied_to: DedupWindow | None = None) -> None:
    """Changelog a dedup delta only once the records it admits are on the broker.

    Written before them, a worker killed in between would come back knowing ids whose records
    never left it, and drop their redelivery: lost. Written after, a crash in between re-admits
    them (at least once); downstream effects are keyed by event id. Faust flushes the outputs
    before it commits the raw offset, so the raw message is redelivered in that case.

    `applied_to`: the window the delta was already applied to in memory (process_raw, fresh_points):
    while it is still the partition's state the delta is only appended (applying it again costs
    ~0.3 µs a point for nothing); a state rebuilt meanwhile gets it applied.
    """
    try:
        await asyncio.gather(*sends)
    except KafkaError as exc:
        log.error("clean records not delivered; dedup delta not changelogged", error=str(exc), partition=partition)
        return
    current = store.current(partition)
    if current is None:  # revoked meanwhile: its new owner rebuilt the state without these ids
        return
    if applied_to is not None and current is applied_to:
        await store.append(partition, delta)
    else:
        await store.record(partition, delta)


def persist_in_background(store: ChangelogStore[DedupWindow], partition: int, delta: dict[str, Any],
                           sends: list[Awaitable[Any]], applied_to: DedupWindow | None = None) -> None:
    task = asyncio.ensure_future(persist_after(store, partition, delta, sends, applied_to))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def background_writes_done() -> None:
    """Returns once every dedup delta handed to persist_in_background so far is written (or given up)."""
    await asyncio.gather(*list(_pending), return_exceptions=True)


def _make_agent(kind: str) -> None:
    store_holder: dict[str, ChangelogStore[DedupWindow]] = {}

    async def dedup(stream: faust.StreamT[bytes]) -> None:
        store = store_holder.get("s")
        if store is None:
            store = store_holder["s"] = await start_dedup_store(kind)
        async for event in stream.events():
            msg = event.message
            groups, delta = await process_raw(kind, event.value, msg.partition, msg.offset, store, time.time())
            window = store.current(msg.partition)  # the one process_raw applied the delta to (no await since)
            sends = await send_clean(kind, groups, msg.partition, msg.offset)
            if delta is not None:
                persist_in_background(store, msg.partition, delta, sends, window)

    A.app.agent(A.raw_topics[kind], name=f"dedup-{kind}")(dedup)


# Metrics are deduplicated by the one-hop metric stage, where their series is scored (agents/scoring/fused.py).
for _kind in ("log", "event"):
    _make_agent(_kind)
