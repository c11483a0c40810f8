"""Worker-side views over all partitions: compacted state topics and a rolling metrics tap.

Cycles need the global ranking of opportunities and the set of active improvements, whichever
worker owns them; monitoring needs a component's recent metrics whichever worker scores them. Each
worker therefore tails these topics itself (no consumer group), as DESIGN.md recommends instead of
Faust's GlobalTable (faust-streaming #283).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.logic.verdicts import ERROR_RATE_METRICS, LATENCY_METRICS, THROUGHPUT_METRICS
from streams import topics as T
from streams.metric_codec import trusted_lean
from streams.records import TERMINAL_STATUSES, ImprovementExecution, ImprovementOpportunity

log = structlog.get_logger(__name__)
WATCHED_METRICS = LATENCY_METRICS | ERROR_RATE_METRICS | THROUGHPUT_METRICS


class TopicTail:
    """Reads topics from the beginning (or the end) across all partitions and calls `on_record`."""

    def __init__(self, bootstrap: str, topics: list[str], on_record: Callable[[str, bytes | None, bytes], None],
                 from_end: bool = False) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.on_record = on_record
        self.from_end = from_end
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                          auto_offset_reset="latest" if self.from_end else "earliest")
        await self._consumer.start()
        tps: list[TopicPartition] = []
        for topic in self.topics:
            parts = self._consumer.partitions_for_topic(topic)
            for _ in range(50):
                if parts:
                    break
                await self._consumer.topics()  # refreshes metadata
                parts = self._consumer.partitions_for_topic(topic)
                await asyncio.sleep(0.1)
            tps.extend(TopicPartition(topic, p) for p in sorted(parts or ()))
        self._consumer.assign(tps)
        if self.from_end:
            await self._consumer.seek_to_end(*tps)
        else:
            await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        empty = 0
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                empty += 1
                if empty >= 2:
                    self.caught_up.set()  # read until polls come back empty (Tansu end offsets are wrong)
                continue
            empty = 0
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.value is not None:
                        try:
                            self.on_record(tp.topic, m.key, m.value)
                        except (ValueError, KeyError, TypeError) as exc:
                            log.warning("view skipped a record", topic=tp.topic, error=str(exc)[:200])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


class StateViews:
    """Opportunities, improvements and runtime flags as seen by every worker."""

    def __init__(self, bootstrap: str) -> None:
        self.opportunities: dict[str, ImprovementOpportunity] = {}
        self.improvements: dict[str, ImprovementExecution] = {}
        self.flags: dict[str, bool] = {}
        self.config: dict[str, Any] = {}
        self.tail = TopicTail(bootstrap, [T.OPPORTUNITIES, T.IMPROVEMENT_STATE, T.CONFIG], self._on)
        self.version = 0  # bumped when opportunities or improvements change (the tap's watch list)

    def _on(self, topic: str, key: bytes | None, value: bytes) -> None:
        if topic == T.OPPORTUNITIES:
            opp = ImprovementOpportunity.model_validate_json(value)
            self.opportunities[opp.opportunity_id] = opp
            self.version += 1
        elif topic == T.IMPROVEMENT_STATE:
            ex = ImprovementExecution.model_validate_json(value)
            self.improvements[ex.improvement_id] = ex
            self.version += 1
        elif topic == T.CONFIG and key is not None:
            k = key.decode()
            rec = orjson.loads(value)
            self.config[k] = rec
            if k.startswith("flags/"):
                self.flags[k.removeprefix("flags/")] = bool(rec.get("value"))

    def active(self, statuses: frozenset[str]) -> list[ImprovementExecution]:
        return [ex for ex in self.improvements.values() if ex.status in statuses]

    def watched_components(self) -> set[tuple[str, str]]:
        """(tenant, component) pairs an improvement may be deployed to and judged on: those of open or
        in-progress opportunities and of improvements not yet ended."""
        out: set[tuple[str, str]] = set()
        for opp in self.opportunities.values():
            if opp.status in ("open", "in_progress"):
                for tenant in {opp.tenant_id, *opp.affected_tenants}:
                    out.update((tenant, c) for c in opp.affected_components)
        for ex in self.improvements.values():
            if ex.status not in TERMINAL_STATUSES and ex.opportunity is not None:
                for tenant in {ex.tenant_id, *ex.opportunity.affected_tenants}:
                    out.update((tenant, c) for c in ex.opportunity.affected_components)
        return out


class Sample(NamedTuple):
    """One watched metric value: all the monitoring verdicts need (small: the tap keeps many)."""

    metric_name: str
    value: float
    variant: str | None


MAX_BYTE_FILTERS = 32  # beyond this many watched components, parsing beats one byte search per component


class MetricsTap:
    """Recent samples of the watched signals per (tenant, component), from telemetry.metrics.

    Only components an improvement may be judged on are kept (`watch`: the StateViews whose
    watched_components are those of open opportunities and running improvements), so the tap costs
    nothing for the bulk of the stream: a message none of whose bytes name a watched component is not
    even parsed, and memory is bounded by `per_key` samples per watched component (latency, error rate
    and throughput together). A component's samples start when its opportunity opens — before any
    improvement of it exists, hence before its baseline window. Without `watch` every component is kept.
    """

    def __init__(self, bootstrap: str, per_key: int = 600, watch: StateViews | None = None) -> None:
        self.samples: dict[tuple[str, str], deque[tuple[float, Sample]]] = defaultdict(
            lambda: deque(maxlen=per_key))
        self._watch = watch
        self._seen_version = -1
        self._refreshed = 0.0
        self.watched: set[tuple[str, str]] | None = None
        self._needles: tuple[bytes, ...] = ()
        self.tail = TopicTail(bootstrap, [T.CLEAN_TOPICS["metric"]], self._on, from_end=True)

    def _refresh_watch(self) -> None:
        if self._watch is None:
            return
        version = self._watch.version
        now = time.monotonic()
        if version == self._seen_version or (self.watched is not None and now - self._refreshed < 0.5):
            return  # at most twice a second: the views change per record while they catch up
        self._seen_version, self._refreshed = version, now
        self.watched = self._watch.watched_components()
        # JSON-escaped component names as they appear in a message's bytes (orjson writes non-ASCII as is)
        self._needles = tuple({orjson.dumps(c) for _t, c in self.watched})
        for key in [k for k in self.samples if k not in self.watched]:
            del self.samples[key]

    def _on(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._refresh_watch()
        watched = self.watched
        if watched is not None and len(self._needles) <= MAX_BYTE_FILTERS \
                and not any(n in value for n in self._needles):
            return  # no watched component in this message: not parsed at all
        obj = orjson.loads(value)
        items = obj.get("records", [obj]) if isinstance(obj, dict) else []
        for it in items:
            if type(it) is not dict or it.get("metric_name") not in WATCHED_METRICS:
                continue
            p = trusted_lean(it)  # dedup writes lean points: no model to build per sample
            if p is None:
                continue
            k = (p["tenant_id"], p["component"])
            if watched is not None and k not in watched:
                continue
            self.samples[k].append(
                (float(p["timestamp"]), Sample(p["metric_name"], float(p["value"]), p["dimensions"].get("variant"))))

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

    def has_variant(self, tenant: str, component: str, variant: str, since: float) -> bool:
        return any(smp.variant == variant and ts >= since for ts, smp in self.samples.get((tenant, component), ()))
