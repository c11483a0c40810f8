"""Worker-side views over all partitions: a topic tail and the compacted state topics' views.

Cycles need the global ranking of opportunities and the set of active improvements, whichever
worker owns them; monitoring needs a component's recent metrics whichever worker scores them
(agents/improvement/metrics_tap.py). Each worker therefore tails these topics itself (no consumer group), as
docs/embedded-broker.md recommends instead of Faust's GlobalTable (faust-streaming #283).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics as T
from streams.records import TERMINAL_STATUSES, ImprovementExecution, ImprovementOpportunity

log = structlog.get_logger(__name__)


class TopicTail:
    """Reads topics from the beginning (or the end) across all partitions and calls `on_record`."""

    def __init__(self, bootstrap: str, topics: list[str], on_record: Callable[[str, bytes | None, bytes], None],
                 from_end: bool = False, on_idle: Callable[[], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.on_record = on_record
        self.on_idle = on_idle  # called after a poll that brought nothing (the topic is quiet)
        self.from_end = from_end
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        # Per partition, the offset of the next record to hand over: every record before it has been
        # given to on_record (a read-back reads up to here and no further, so nothing is seen twice) —
        # except while paused: then nothing is fetched, and resume_at_end moves the positions to the end.
        self.positions: dict[TopicPartition, int] = {}
        self.paused = False
        self._resume_then: Callable[[], None] | None = None

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
        for tp in tps:
            self.positions[tp] = await self._consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    def pause(self) -> None:
        """Stop fetching (no reader wants the records now): nothing is read, and none is handed over, until
        resume_at_end."""
        if self._consumer is None or self.paused or not self.positions:
            return
        self._consumer.pause(*self.positions)
        self.paused = True

    def resume_at_end(self, then: Callable[[], None]) -> None:
        """Fetch again, from the end of each partition: what arrived while paused is skipped, `positions`
        move to the end, then `then()` is called (the caller reads back what it needs up to there)."""
        if self.paused:
            self._resume_then = then

    @property
    def resuming(self) -> bool:
        return self._resume_then is not None

    async def _resume(self) -> None:
        assert self._consumer is not None and self._resume_then is not None
        tps = list(self.positions)
        # Tansu's LATEST is the last batch's base offset + 1 (docs/embedded-broker.md): at or before the true
        # end, so at most part of the last batch is handed over from here, never a record skipped.
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            self.positions[tp] = await self._consumer.position(tp)
        self._consumer.resume(*tps)
        then, self._resume_then = self._resume_then, None
        self.paused = False
        then()

    async def _run(self) -> None:
        assert self._consumer is not None
        empty = 0
        while True:
            if self._resume_then is not None:
                await self._resume()
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                empty += 1
                if empty >= 2:
                    self.caught_up.set()  # read until polls come back empty (Tansu end offsets are wrong)
                if self.on_idle is not None:
                    self.on_idle()
                continue
            empty = 0
            positions = self.positions
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.value is not None:
                        try:
                            self.on_record(tp.topic, m.key, m.value)
                        except (ValueError, KeyError, TypeError) as exc:
                            log.warning("view skipped a record", topic=tp.topic, error=str(exc)[:200])
                    positions[tp] = m.offset + 1

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
        self.status: dict[str, dict[str, Any]] = {}  # worker process id -> its last heartbeat's detail
        self.tail = TopicTail(bootstrap, [T.OPPORTUNITIES, T.IMPROVEMENT_STATE, T.CONFIG, T.STATUS], self._on)
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
        elif topic == T.STATUS and key is not None:
            rec = orjson.loads(value)
            if isinstance(rec, dict) and rec.get("role") == "worker" and isinstance(rec.get("detail"), dict):
                self.status[key.decode()] = rec["detail"]
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
