"""Publishing telemetry records to the raw Kafka topics as batched envelopes, returning once Kafka acknowledged."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from streams.codec import encode_envelope
from streams.ownership import owner_partition
from streams.records import DeadLetter, MetricDataPoint, Record
from streams.topics import DEADLETTER, RAW_TOPICS

PUBLISHED = Counter(
    "kaizen_connector_records_published_total", "Telemetry records published by the connectors", ["kind"]
)


class TelemetryPublisher:
    """An aiokafka producer for telemetry: envelopes of ≤ `chunk_size` records, keyed by tenant (metric
    points written to the partition owning their series).

    `publish` groups the records by tenant (unless a key is given), sends one envelope per chunk to
    RAW_TOPICS[kind] and waits for every acknowledgement, so a caller may advance its cursor (or
    delete its SQS messages) right after it returns. Idempotence is off: Tansu has no InitProducerId;
    duplicates from a crash between send and cursor are caught downstream by the deterministic event id.
    """

    def __init__(
        self, bootstrap_servers: str, *, acks: Literal["all", 1] | int | str = "all", linger_ms: int = 20,
        compression_type: str | None = None, chunk_size: int = 500, client_id: str = "kaizen-connector",
        max_request_size: int = 4 * 1024 * 1024, producer: AIOKafkaProducer | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.chunk_size = chunk_size
        self._owned = producer is None
        self._producer = producer or AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, acks=acks, linger_ms=linger_ms,
            compression_type=compression_type, client_id=client_id, max_request_size=max_request_size,
            enable_idempotence=False,
        )
        self._started = False
        self.records_sent: dict[str, int] = defaultdict(int)
        self.messages_sent = 0

    async def start(self) -> None:
        if not self._started:
            await self._producer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started and self._owned:
            await self._producer.stop()
        self._started = False

    async def __aenter__(self) -> TelemetryPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def publish(self, kind: str, records: Sequence[Record], key: str | None = None) -> None:
        """Send `records` of one kind ("metric", "log", "event") and return once all are acknowledged."""
        if not records:
            return
        topic = RAW_TOPICS[kind]
        await self._send_grouped(topic, records, key)
        self.records_sent[kind] += len(records)
        PUBLISHED.labels(kind=kind).inc(len(records))

    async def publish_dead(self, letters: Sequence[DeadLetter]) -> None:
        """Bad input found at the edge (an unreadable SQS body, a bad fallback line) goes to the dead-letter topic."""
        if not letters:
            return
        futures = [await self._producer.send(DEADLETTER, d.to_bytes(), key=d.source_topic.encode())
                   for d in letters]
        await asyncio.gather(*futures)
        self.records_sent["deadletter"] += len(letters)

    async def _send_grouped(self, topic: str, records: Sequence[Record], key: str | None) -> None:
        """Envelopes per tenant (or per `key`); metric points also per partition owning their series, so
        they are deduplicated and scored in one hop (streams/ownership.py, docs/throughput.md)."""
        partitions = len(await self._producer.partitions_for(topic) or ()) if topic == RAW_TOPICS["metric"] else 0
        groups: dict[tuple[str, int | None], list[Record]] = defaultdict(list)
        for rec in records:
            group_key = key if key is not None else str(getattr(rec, "tenant_id", "") or "")
            owner = owner_partition(rec.series_key(), partitions) if partitions and isinstance(
                rec, MetricDataPoint) else None
            groups[(group_key, owner)].append(rec)
        futures: list[asyncio.Future[Any]] = []
        for (group_key, owner), recs in groups.items():
            for i in range(0, len(recs), self.chunk_size):
                payload = encode_envelope(recs[i:i + self.chunk_size])
                futures.append(await self._producer.send(topic, payload, key=group_key.encode() or None,
                                                         partition=owner))
                self.messages_sent += 1
        await asyncio.gather(*futures)
