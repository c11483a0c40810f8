"""Noticing a broker that came back empty or lost topics (restarted embedded broker, deleted topic).

The first record of the one-partition topic `kaizen.epoch` (kept forever) names the broker's "epoch": the
first kaizen process that finds the topic empty or missing writes a random id there, and every process
reads offset 0 back, so all agree on the id. A broker that loses its data loses that record: the next
check finds another id (or writes one) and reports the reset. Declared topics that existed at the last
check and are gone now are reported too (a topic deleted under a running system). On a real Kafka
neither happens unless data is really lost, so a report is always worth saying loudly.

Whoever must act on a reset (the improvement engine reconciles its applied-changes journal at once)
subscribes with `on_reset(callback)`: streams imports no agents, so the agents register themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams import topics as T
from streams.state import ensure_topic

log = structlog.get_logger(__name__)
ResetListener = Callable[[dict[str, Any]], None]
_listeners: list[ResetListener] = []


def on_reset(callback: ResetListener) -> None:
    """Call `callback(report)` whenever any BrokerEpoch of this process reports a reset (once per callback)."""
    if callback not in _listeners:
        _listeners.append(callback)


def _notify(report: dict[str, Any]) -> None:
    for callback in list(_listeners):
        try:
            callback(report)
        except Exception:  # noqa: BLE001 - one listener's failure must not hide the reset from the others
            log.exception("broker reset listener failed", listener=getattr(callback, "__qualname__", repr(callback)))


@dataclass
class BrokerEpoch:
    """Checks, one call at a time, whether the broker was reset since the previous check."""

    bootstrap: str
    who: str = "kaizen"
    watched: frozenset[str] = field(default_factory=lambda: T.TOPIC_NAMES)
    known: str | None = None
    topics_seen: set[str] = field(default_factory=set)
    resets: list[dict[str, Any]] = field(default_factory=list)

    async def _read(self) -> tuple[str | None, set[str]]:
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", request_timeout_ms=5000)
        await c.start()
        try:
            topics = set(await c.topics())
            if T.EPOCH not in topics:
                return None, topics
            tp = TopicPartition(T.EPOCH, 0)
            c.assign([tp])
            c.seek(tp, 0)
            batch = await c.getmany(tp, timeout_ms=1500, max_records=1)
            msgs = batch.get(tp, [])
            if not msgs or msgs[0].value is None:
                return None, topics
            return str(orjson.loads(msgs[0].value).get("epoch", "")), topics
        finally:
            await c.stop()

    async def _write(self) -> None:
        await ensure_topic(self.bootstrap, T.EPOCH, 1, {"retention.ms": "-1"})
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await p.start()
        try:
            value = {"epoch": uuid.uuid4().hex, "at": datetime.now(UTC).isoformat(), "by": self.who}
            await p.send_and_wait(T.EPOCH, orjson.dumps(value), key=b"epoch", partition=0)
        finally:
            await p.stop()

    async def check(self) -> dict[str, Any] | None:
        """The reset seen since the last check (also appended to `resets` and logged), or None.
        Raises KafkaError/OSError while the broker is unreachable (a later check sees what happened)."""
        epoch, topics = await self._read()
        if epoch is None:
            await self._write()
            epoch, topics = await self._read()
        gone = sorted((self.topics_seen & self.watched) - topics)
        self.topics_seen = topics
        report: dict[str, Any] | None = None
        if self.known is not None and epoch != self.known:
            report = {"kind": "broker reset", "at": datetime.now(UTC).isoformat(), "previous_epoch": self.known,
                      "epoch": epoch, "topics_gone": gone,
                      "detail": "the broker came back without kaizen's data (topics, offsets, changelogs)"}
        elif gone:
            report = {"kind": "topics deleted", "at": datetime.now(UTC).isoformat(), "epoch": epoch,
                      "topics_gone": gone, "detail": "declared topics disappeared from the broker"}
        self.known = epoch
        if report is not None:
            self.resets.append(report)
            del self.resets[:-20]
            log.error("BROKER RESET DETECTED: kaizen's data on the broker is gone", who=self.who, **report)
            _notify(report)
        return report


async def safe_check(ep: BrokerEpoch) -> dict[str, Any] | None:
    """check() for periodic callers: an unreachable broker is not a reset (yet)."""
    try:
        return await ep.check()
    except (KafkaError, OSError, TimeoutError) as exc:
        log.debug("broker epoch check skipped", error=str(exc)[:200])
        return None
