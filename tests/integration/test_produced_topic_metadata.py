"""A producer keeps the metadata of every topic it writes to (streams/runtime.py track_every_produced_topic).

Through Tansu, a bare aiokafka producer: a batch for topic A lingers; a first send to a topic C created after
the producer started makes aiokafka track C only, and its refresh drops A. Without kaizen's fix A's batch has
no leader from then on and is not delivered (the test shows it with aiokafka's own method); with it, it is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import NotLeaderForPartitionError

from tests.conftest import Backend

LINGER_MS = 2000  # A's batch is still in the accumulator when C's refresh lands
EXPIRY_MS = 8000  # how long a batch is retried (aiokafka's request_timeout_ms; Faust's is 20 minutes)


@pytest.fixture
def aiokafka_own_method(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(AIOKafkaClient, "_wait_on_metadata", AIOKafkaClient._kaizen_original_wait_on_metadata)
    yield


async def _create(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _a_lingering_batch_then_a_new_topic(bootstrap: str) -> tuple[Any, AIOKafkaProducer, str]:
    a, c = f"meta-a-{uuid.uuid4().hex[:8]}", f"meta-c-{uuid.uuid4().hex[:8]}"
    await _create(bootstrap, a)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=LINGER_MS, request_timeout_ms=EXPIRY_MS)
    await producer.start()  # metadata of every topic, A included: aiokafka tracks no topic yet
    delivered = await producer.send(a, b"lingers")
    await _create(bootstrap, c)
    await producer.send_and_wait(c, b"first send to a topic the producer does not know")
    return delivered, producer, a


async def test_a_lingering_batch_survives_the_first_send_to_a_new_topic(backend: Backend) -> None:
    delivered, producer, a = await _a_lingering_batch_then_a_new_topic(backend.kafka_bootstrap)
    try:
        meta = await asyncio.wait_for(delivered, timeout=15)
        assert meta.topic == a and meta.offset == 0
        assert producer.client.cluster.leader_for_partition(meta.topic_partition) is not None
    finally:
        await producer.stop()


async def test_without_the_fix_the_batch_loses_its_leader(backend: Backend, aiokafka_own_method: None) -> None:
    """Shows the fix is needed with the aiokafka installed (if this starts failing, aiokafka fixed it): the
    batch waits without a leader until it expires, and is then lost."""
    delivered, producer, a = await _a_lingering_batch_then_a_new_topic(backend.kafka_bootstrap)
    try:
        assert producer.client.cluster.partitions_for_topic(a) is None
        with pytest.raises(NotLeaderForPartitionError):
            await asyncio.wait_for(delivered, timeout=EXPIRY_MS / 1000 + 15)
    finally:
        await asyncio.wait_for(producer.stop(), timeout=30)
