"""Changelog stores follow their source topic's partitions (through the real broker)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.state import ChangelogStore, ensure_topic, kv_apply, kv_init, topic_partitions
from tests.conftest import Backend


async def _make_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            topic_configs={"retention.ms": "604800000"})])
    finally:
        await admin.close()


def _store(bootstrap: str, topic: str, source: str) -> ChangelogStore[dict]:  # type: ignore[type-arg]
    return ChangelogStore("t", topic, bootstrap, 2, kv_init, kv_apply, empty_polls=2, poll_ms=150, source_topic=source)


async def _source_and_changelog(backend: Backend, source_partitions: int) -> tuple[str, str]:
    """A source topic made elsewhere with `source_partitions` partitions, and a changelog name for it."""
    source, changelog = f"src-{uuid.uuid4().hex[:6]}", f"cl-{uuid.uuid4().hex[:6]}"
    await _make_topic(backend.kafka_bootstrap, source, source_partitions)
    return source, changelog


async def test_a_source_with_more_partitions_than_configured_gets_a_changelog_partition_each(backend: Backend) -> None:
    source, changelog = await _source_and_changelog(backend, 6)  # wider than the 2 configured
    store = _store(backend.kafka_bootstrap, changelog, source)
    await store.start()
    try:
        assert store.partitions == 6
        assert await topic_partitions(backend.kafka_bootstrap, changelog) == 6
        await store.record(5, {"set": {"k": "v5"}}, wait=True)
    finally:
        await store.stop()
    again = _store(backend.kafka_bootstrap, changelog, source)  # a new owner rebuilds partition 5
    await again.start()
    try:
        assert await again.state(5) == {"k": "v5"}
    finally:
        await again.stop()


async def test_an_existing_narrow_changelog_is_grown_or_refused_with_advice(backend: Backend) -> None:
    source, changelog = await _source_and_changelog(backend, 4)
    await ensure_topic(backend.kafka_bootstrap, changelog, 2)  # written by an older, narrower deployment
    store = _store(backend.kafka_bootstrap, changelog, source)
    if backend.kind == "embedded":  # Tansu 0.6 has no CreatePartitions: a clear error, not a hang later
        with pytest.raises(RuntimeError, match=r"could not grow .* from 2 to 4 partitions.*KAFKA_TOPIC_PARTITIONS=4"):
            await store.start()
        return
    await store.start()  # a real Kafka grows the changelog
    try:
        assert await topic_partitions(backend.kafka_bootstrap, changelog) == 4
        await store.record(3, {"set": {"k": "v3"}}, wait=True)
        assert await store.state(3) == {"k": "v3"}
    finally:
        await store.stop()


async def test_a_partition_beyond_the_changelog_is_an_error_not_a_hang(backend: Backend) -> None:
    source, changelog = await _source_and_changelog(backend, 2)
    store = _store(backend.kafka_bootstrap, changelog, source)
    await store.start()
    try:
        with pytest.raises(ValueError, match="partition 7 has no changelog partition"):
            await store.state(7)
    finally:
        await store.stop()
