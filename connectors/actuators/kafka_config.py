"""Actuator for the compacted Kafka config topic (streams.topics.CONFIG), keyed `tenant/component/parameter`.

Each record's value is JSON `{"value", "previous", "improvement_id", "action", "fingerprint"}`;
`value` null means "absent" (an explicit record, not a tombstone, so readers see the rollback).
Reads rebuild the view by reading the topic until `empty_polls` polls in a row come back empty —
never up to the reported end offset, which Tansu gets wrong (docs/embedded-broker.md)."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.actuators.base import Actuator, AppliedChange, FingerprintMismatch, applied, check_key
from connectors.actuators.fingerprint import fingerprint, verify
from streams.topics import CONFIG


class KafkaConfigActuator(Actuator):
    """`producer` and `consumer` are started aiokafka clients owned by the caller; the consumer must
    have no group (the actuator assigns every partition of the topic and reads from the beginning)."""

    name = "kafka_config"

    def __init__(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str = CONFIG,
                 poll_ms: int = 200, empty_polls: int = 2) -> None:
        self.producer = producer
        self.consumer = consumer
        self.topic = topic
        self.poll_ms = poll_ms
        self.empty_polls = empty_polls
        self.state: dict[str, dict[str, Any]] = {}
        self.records_read = 0
        self._assigned = False

    async def _assign(self) -> None:
        if self._assigned:
            return
        await self.consumer.topics()  # refreshes metadata
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"topic {self.topic!r} does not exist (the worker creates it at start)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._assigned = True

    async def refresh(self) -> int:
        """Read everything new on the topic into the view; returns how many records were read."""
        await self._assign()
        read, empty = 0, 0
        while empty < self.empty_polls:
            batches = await self.consumer.getmany(timeout_ms=self.poll_ms)
            if not any(batches.values()):
                empty += 1
                continue
            empty = 0
            for messages in batches.values():
                for msg in messages:
                    if msg.key is None:
                        continue
                    key = msg.key.decode()
                    if msg.value is None:
                        self.state.pop(key, None)
                    else:
                        self.state[key] = orjson.loads(msg.value)
                    read += 1
        self.records_read += read
        return read

    async def read(self, key: str) -> str | None:
        await self.refresh()
        record = self.state.get(key)
        return None if record is None else record.get("value")

    def full_key(self, key: str, target: str | None) -> str:
        """`<tenant>/<component>[/<target>]/<parameter>`; every segment a checked identifier."""
        return check_key(super().full_key(key, target))

    async def _send(self, key: str, record: dict[str, Any]) -> str:
        meta = await self.producer.send_and_wait(self.topic, key=key.encode(), value=orjson.dumps(record))
        self.state[key] = record
        return f"{meta.partition}:{meta.offset}"

    async def apply(self, key: str, value: str, improvement_id: str, target: str | None = None) -> AppliedChange:
        name = self.full_key(key, target)
        await self.refresh()
        current = self.state.get(name)
        if current and current.get("action") == "apply" and current.get("improvement_id") == improvement_id \
                and current.get("value") == value:
            return applied(name, current.get("previous"), value, improvement_id, target, noop=True)
        previous = None if current is None else current.get("value")
        version = await self._send(name, {"value": value, "previous": previous, "improvement_id": improvement_id,
                                          "action": "apply", "fingerprint": fingerprint(value)})
        return applied(name, previous, value, improvement_id, target, version)

    async def rollback(self, change: AppliedChange) -> None:
        await self.refresh()
        record = self.state.get(change.key) or {}
        current = record.get("value")
        if record.get("action") == "rollback" and record.get("improvement_id") == change.improvement_id:
            return  # already rolled back
        if not verify(current, change.fingerprint):
            raise FingerprintMismatch(
                f"{change.key}: current {fingerprint(current)} != applied {change.fingerprint}; not rolling back"
            )
        await self._send(change.key, {"value": change.previous, "previous": current,
                                      "improvement_id": change.improvement_id, "action": "rollback",
                                      "fingerprint": fingerprint(change.previous)})
