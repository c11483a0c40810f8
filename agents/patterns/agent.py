"""Error-pattern agent: log lines → templates, hourly counts per tenant and log group → insights."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import structlog

from agents.patterns.logic.admission import PatternCap, admit_line
from agents.patterns.logic.patterns import PatternCounter, PatternEntry, pattern_insight
from agents.patterns.logic.templates import PatternMiner
from agents.routing import insight_partition
from streams import app as A
from streams.codec import dead_letter, encode_envelope, split_encoded
from streams.contract import DEADLETTER_ORIGINAL_CHARS
from streams.metrics import DEADLETTERS, INSIGHTS_GENERATED
from streams.records import LogEvent
from streams.runtime import survives_broker_outage
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)

MINER_KEY = "__miner__"
MINER_CHECKPOINT_SECONDS = 5.0
PUBLISH_SECONDS = 2.0
STATS: dict[str, int] = defaultdict(int)


class PartitionPatterns:
    """The miner and counters of one partition, rebuilt from the store's checkpoints."""

    def __init__(self, book: dict[str, Any]) -> None:
        cp = book.get(MINER_KEY)
        self.miner = PatternMiner.from_state(base64.b64decode(cp)) if cp else PatternMiner()
        self.counter = PatternCounter.from_book(book, A.settings.pattern_window_seconds,
                                                A.settings.pattern_recurring_threshold)
        for entry in self.counter.entries.values():  # patterns counted after the miner's last checkpoint
            self.miner.adopt(entry.pattern_id, entry.template, entry.category)
        self.cap = PatternCap.share(A.settings.pattern_max_templates_per_tenant, A.settings.pattern_max_templates,
                                    A.settings.kafka_topic_partitions)
        self.miner_dirty = False
        self.miner_cp_at = time.monotonic()
        self.published: dict[str, float] = {}
        self.pending: dict[str, PatternEntry] = {}  # changed since their last publication (rate-limited)


_store: dict[str, ChangelogStore[dict[str, Any]]] = {}
_parts: dict[int, PartitionPatterns] = {}


async def _partition(partition: int) -> tuple[ChangelogStore[dict[str, Any]], PartitionPatterns]:
    s = _store.get("s")
    if s is None:
        s = _store["s"] = await start_agent_store("patterns", A.clean_topics["log"].get_topic_name())
    pp = _parts.get(partition)
    if pp is None or not s.loaded(partition):
        pp = _parts[partition] = PartitionPatterns(await s.state(partition))
    return s, pp


async def handle_logs(partition: int, events: list[LogEvent], now: float) -> int:
    """Template, count and (maybe) raise insights for one batch of log lines; returns insights sent."""
    store, pp = await _partition(partition)
    updates: dict[str, Any] = {}
    urgent: set[str] = set()
    sent = 0
    over: list[LogEvent] = []
    for ev in events:
        match = admit_line(pp.miner, pp.counter, pp.cap, ev)
        if match is None:
            over.append(ev)
            continue
        if match.is_new:
            pp.miner_dirty = True
        entry, findings = pp.counter.observe(ev, match, now)
        updates[entry.key] = entry.to_json()
        for reason in findings:
            ins = pattern_insight(ev, match, entry, reason, now, pp.counter.window)
            await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                        partition=insight_partition(ins, A.settings.kafka_topic_partitions))
            INSIGHTS_GENERATED.labels("patterns").inc()
            sent += 1
        pp.pending[entry.key] = entry
        if findings or match.is_new:
            urgent.add(entry.key)
    # One publication per touched pattern per batch, with its final counts; a pattern published less than
    # PUBLISH_SECONDS ago waits for the flush timer instead (the topic always converges to the latest).
    for key in list(pp.pending):
        if key in urgent or now - pp.published.get(key, 0.0) >= PUBLISH_SECONDS:
            await publish_entry(pp, key, now)
    if pp.miner_dirty and time.monotonic() - pp.miner_cp_at >= MINER_CHECKPOINT_SECONDS:
        updates[MINER_KEY] = base64.b64encode(pp.miner.to_state()).decode()
        pp.miner_dirty = False
        pp.miner_cp_at = time.monotonic()
    if updates:
        await store.record(partition, {"set": updates, "del": pp.counter.expired_keys()})
    if over:
        await dead_letter_over_cap(partition, pp.cap, over)
    STATS["lines"] += len(events) - len(over)
    STATS["insights"] += sent
    return sent


async def dead_letter_over_cap(partition: int, cap: PatternCap, over: list[LogEvent]) -> None:
    """Lines that would open a pattern beyond their tenant's cap: dead-lettered (reason "pattern cap"), each
    dead letter's original an envelope of whole lines that fits uncut (a line too large for that alone is
    dead-lettered alone, its original cut)."""
    by_tenant: dict[str, list[LogEvent]] = defaultdict(list)
    for ev in over:
        by_tenant[ev.tenant_id].append(ev)
    topic = A.clean_topics["log"].get_topic_name()
    s = A.settings
    for tenant, lines in by_tenant.items():
        reason = (f"pattern cap: tenant {tenant[:80]} is at PATTERN_MAX_TEMPLATES_PER_TENANT "
                  f"({s.pattern_max_templates_per_tenant}, {cap.per_tenant} in this partition) or the partition at "
                  f"its share of PATTERN_MAX_TEMPLATES ({s.pattern_max_templates}, {cap.total}); lines of new "
                  f"patterns are not counted")
        chunks, alone = split_encoded(lines, encode_envelope, DEADLETTER_ORIGINAL_CHARS // 2)
        chunks += [encode_envelope([ev]) for ev in alone]
        for chunk in chunks:
            dl = dead_letter(reason, chunk.decode(), source_topic=topic, partition=partition)
            await A.deadletter_topic.send(key=topic.encode(), value=dl.to_bytes())
        DEADLETTERS.labels("pattern_cap").inc(len(chunks))
        STATS["pattern_cap_lines"] += len(lines)
        STATS["pattern_cap_deadletters"] += len(chunks)
    log.warning("log lines beyond the pattern cap dead-lettered", partition=partition, lines=len(over),
                tenants=len(by_tenant))


async def publish_entry(pp: PartitionPatterns, key: str, now: float) -> None:
    entry = pp.pending.pop(key, None)
    if entry is None:
        return
    pp.published[key] = now
    await A.patterns_topic.send(key=key.encode(), value=orjson.dumps(entry.to_json()))


@A.app.agent(A.clean_topics["log"], name="error-patterns")
async def patterns(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        raw = orjson.loads(event.value) if event.value else {}
        items = raw.get("records", [raw]) if isinstance(raw, dict) else []
        logs = [LogEvent.model_validate(it) for it in items]
        await handle_logs(event.message.partition, logs, time.time())


@A.app.timer(interval=2.0)
@survives_broker_outage
async def checkpoint_miners() -> None:
    """New patterns learnt since the last checkpoint are persisted, and rate-limited pattern counts
    published, even when the stream goes quiet."""
    s = _store.get("s")
    if s is None:
        return
    now = time.time()
    for partition, pp in list(_parts.items()):
        if not s.loaded(partition):
            pp.pending.clear()  # revoked: the partition's new owner publishes from the rebuilt state
            continue
        for key in [k for k in pp.pending if now - pp.published.get(k, 0.0) >= PUBLISH_SECONDS]:
            await publish_entry(pp, key, now)
    for partition, pp in list(_parts.items()):
        if pp.miner_dirty and s.loaded(partition):
            await s.record(partition, {"set": {MINER_KEY: base64.b64encode(pp.miner.to_state()).decode()}})
            pp.miner_dirty = False
            pp.miner_cp_at = time.monotonic()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
