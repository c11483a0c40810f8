"""Dedup agents: raw telemetry → validated, deduplicated telemetry (bad records → dead letters)."""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from typing import Any

import faust
import structlog

from agents.logic.dedup import DedupWindow, apply_dedup_delta, dedup_delta, id_hash, make_window_factory
from streams import app as A
from streams.codec import decode_telemetry, encode_envelope
from streams.metrics import DEADLETTERS, DUPLICATES_DROPPED, TELEMETRY_PROCESSED
from streams.records import Record
from streams.runtime import runtime
from streams.state import ChangelogStore

log = structlog.get_logger(__name__)
STATS: dict[str, Any] = {"processed": defaultdict(int), "duplicates": defaultdict(int), "deadletters": defaultdict(int)}


def output_key(kind: str, rec: Any) -> str:
    """What the clean topic is partitioned by: the series for metrics (one detector per series
    lives on one worker), tenant and log group for logs, tenant for events."""
    if kind == "metric":
        return str(rec.series_key())
    if kind == "log":
        return f"{rec.tenant_id}|{rec.log_group}"
    return str(rec.tenant_id)


def partition_for(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def dedup_store(kind: str) -> ChangelogStore[DedupWindow]:
    settings = A.settings
    return ChangelogStore(
        f"dedup-{kind}", f"{settings.kaizen_app_id}.state.dedup.{kind}", runtime.bootstrap, settings.kafka_topic_partitions,
        make_window_factory(settings.cloudwatch_event_dedup_window_seconds), apply_dedup_delta,
    )


async def process_raw(kind: str, value: bytes | None, partition: int, offset: int,
                      store: ChangelogStore[DedupWindow], now: float) -> dict[int, list[Record]]:
    """Decode, dead-letter, dedup one raw message; returns fresh records grouped by output partition."""
    topic_name = A.raw_topics[kind].get_topic_name()
    decoded = decode_telemetry(kind, value, topic=topic_name, partition=partition, offset=offset)
    for dead in decoded.dead:
        await A.deadletter_topic.send(key=topic_name.encode(), value=dead.to_bytes())
        DEADLETTERS.labels(kind).inc()
        STATS["deadletters"][kind] += 1
    if not decoded.records:
        return {}
    window = await store.state(partition)
    hashes = [id_hash(r.event_id) for r in decoded.records]
    fresh_flags = window.filter_new(hashes, now)
    out: dict[int, list[Record]] = defaultdict(list)
    fresh_hashes: list[int] = []
    nparts = A.settings.kafka_topic_partitions
    for rec, h, fresh in zip(decoded.records, hashes, fresh_flags, strict=True):
        if not fresh:
            DUPLICATES_DROPPED.labels(rec.tenant_id, kind).inc()
            STATS["duplicates"][f"{rec.tenant_id}/{kind}"] += 1
            continue
        fresh_hashes.append(h)
        out[partition_for(output_key(kind, rec), nparts)].append(rec)
    if fresh_hashes:
        # Outputs are sent before the dedup delta is durable: a crash in between re-sends records
        # (at least once) rather than losing them; downstream effects are keyed by event id.
        await store.record(partition, dedup_delta(fresh_hashes, now))
    TELEMETRY_PROCESSED.labels(kind).inc(len(fresh_hashes))
    STATS["processed"][kind] += len(fresh_hashes)
    return out


def _make_agent(kind: str) -> None:
    store_holder: dict[str, ChangelogStore[DedupWindow]] = {}

    async def dedup(stream: faust.StreamT[bytes]) -> None:
        store = store_holder.get("s")
        if store is None:
            store = dedup_store(kind)
            store.source_topic = A.raw_topics[kind].get_topic_name()  # type: ignore[attr-defined]
            await store.start()
            runtime.stores.append(store)
            store_holder["s"] = store
        async for event in stream.events():
            msg = event.message
            groups = await process_raw(kind, event.value, msg.partition, msg.offset, store, time.time())
            for part, recs in groups.items():
                await A.clean_topics[kind].send(value=encode_envelope(recs), partition=part)

    A.app.agent(A.raw_topics[kind], name=f"dedup-{kind}")(dedup)


for _kind in ("metric", "log", "event"):
    _make_agent(_kind)
