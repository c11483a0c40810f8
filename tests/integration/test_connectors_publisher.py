"""TelemetryPublisher through the real broker: envelopes of ≤500 records, keyed by tenant, acknowledged."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer

from connectors.publisher import TelemetryPublisher
from streams.codec import decode_telemetry
from streams.records import MetricDataPoint
from streams.topics import RAW_TOPICS
from tests.conftest import Backend


async def test_envelopes_chunked_and_keyed_by_tenant(backend: Backend) -> None:
    ns = f"Test/Pub{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    points = [MetricDataPoint(metric_name="Lat", value=float(i), timestamp=t0 + timedelta(seconds=i),
                              tenant_id="a" if i < 1200 else "b", namespace=ns) for i in range(1210)]
    async with TelemetryPublisher(backend.kafka_bootstrap, chunk_size=500) as pub:
        await pub.publish("metric", points)
        assert pub.records_sent["metric"] == 1210 and pub.messages_sent == 4  # a: 500+500+200, b: 10

    consumer = AIOKafkaConsumer(RAW_TOPICS["metric"], bootstrap_servers=backend.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: list[tuple[bytes | None, int]] = []
    ids: set[str] = set()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(ids) < 1210:
            for tp, msgs in (await consumer.getmany(timeout_ms=300)).items():
                for m in msgs:
                    if m.value is None or ns.encode() not in m.value:
                        continue
                    assert isinstance(orjson.loads(m.value), dict)
                    decoded = decode_telemetry("metric", m.value, topic=tp.topic)
                    assert not decoded.dead
                    found.append((m.key, len(decoded.records)))
                    ids.update(r.event_id for r in decoded.records)
    finally:
        await consumer.stop()
    assert len(ids) == 1210
    assert sorted(found) == [(b"a", 200), (b"a", 500), (b"a", 500), (b"b", 10)]


async def test_metric_points_go_to_the_partition_owning_their_series(backend: Backend) -> None:
    """One hop where the data allows: every envelope holds points of series its partition owns."""
    from streams.ownership import owner_partition

    ns = f"Test/Own{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    points = [MetricDataPoint(metric_name="Lat", value=float(i), timestamp=t0 + timedelta(seconds=i), tenant_id="a",
                              namespace=ns, dimensions={"service": f"s{i % 40}"}) for i in range(400)]
    async with TelemetryPublisher(backend.kafka_bootstrap, chunk_size=500) as pub:
        await pub.publish("metric", points)
        parts = len(await pub._producer.partitions_for(RAW_TOPICS["metric"]))
    assert parts > 1
    consumer = AIOKafkaConsumer(RAW_TOPICS["metric"], bootstrap_servers=backend.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None, enable_auto_commit=False)
    await consumer.start()
    ids: set[str] = set()
    used: set[int] = set()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(ids) < 400:
            for tp, msgs in (await consumer.getmany(timeout_ms=300)).items():
                for m in msgs:
                    if m.value is None or ns.encode() not in m.value:
                        continue
                    for r in decode_telemetry("metric", m.value, topic=tp.topic).records:
                        assert owner_partition(r.series_key(), parts) == tp.partition, "point off its owner"
                        ids.add(r.event_id)
                        used.add(tp.partition)
    finally:
        await consumer.stop()
    assert len(ids) == 400 and len(used) > 1
