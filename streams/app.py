"""The one faust.App and the topic objects of every stage (declared from streams.topics)."""

from __future__ import annotations

from typing import Any

import faust

from streams import topics as t
from streams.runtime import bound_faust_producer_requests, watch_faust_producer_flushes
from streams.settings import get_settings


def _broker_url(bootstrap: str | None) -> str:
    servers = (bootstrap or "127.0.0.1:9092").split(",")
    return ";".join(f"kafka://{s.strip()}" for s in servers if s.strip())


settings = get_settings()


def _shorter_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Faust hard-codes aiokafka's fetch_max_wait_ms=1500; Tansu does not answer a waiting fetch when
    data arrives, so every hop of the pipeline could wait 1.5 s. Detection latency needs ~0.1 s."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_kaizen_patched", False):
        return
    original = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by aiokafka's Fetcher at start()
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread_cls._kaizen_patched = True  # type: ignore[attr-defined]


_shorter_fetch_wait(settings.kaizen_fetch_max_wait_ms)
bound_faust_producer_requests()  # a reply the broker never sends holds the producer 30 s, not 20 min
watch_faust_producer_flushes()  # a flush the broker holds up is named in the log, with its partitions
_datadir = settings.kaizen_data_dir / "faust" / settings.kaizen_app_id  # not the working directory
_datadir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.kaizen_app_id,
    broker=_broker_url(settings.kafka_bootstrap_servers),
    store="memory://",
    datadir=str(_datadir),  # state lives in kaizen's own changelog topics (streams/state.py), see README
    autodiscover=False,
    origin="streams",
    topic_partitions=settings.kafka_topic_partitions,
    topic_replication_factor=settings.kafka_replication_factor,
    topic_allow_declare=True,
    # Tansu: each JoinGroup round takes half the session timeout; keep it short (docs/embedded-broker.md).
    broker_session_timeout=settings.kaizen_broker_session_timeout,
    broker_heartbeat_interval=max(0.5, settings.kaizen_broker_session_timeout / 6),
    broker_rebalance_timeout=max(10.0, settings.kaizen_broker_session_timeout * 2),
    # Offsets are committed every 0.5 s, each commit after Faust flushed the producer (at least once).
    # 0.2 s was tried: it reports a backlog's end sooner, but under load the commits (0.2-0.6 s with the
    # flush) ran back to back, flushing the producer continuously, for no gain measurable on this loaded
    # machine (docs/throughput.md). A backlog's end is committed at once instead (streams/commits.py).
    broker_commit_interval=settings.kaizen_commit_interval_seconds,
    producer_acks=1,
    producer_linger=0.02,
    producer_compression_type=settings.compression_type,  # KAIZEN_PRODUCER_COMPRESSION (streams/settings.py)
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    stream_wait_empty=False,
    table_standby_replicas=0,
)


def _bytes_topic(name: str) -> faust.TopicT:
    spec = next(s for s in t.TOPICS if s.name == name)
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        config=dict(spec.config), partitions=settings.kafka_topic_partitions,
    )


# Values are bytes on the wire: kaizen validates them itself (pydantic), so a bad record can be
# dead-lettered with its original bytes instead of crashing a Faust deserializer.
raw_topics = {kind: _bytes_topic(name) for kind, name in t.RAW_TOPICS.items()}
clean_topics = {kind: _bytes_topic(name) for kind, name in t.CLEAN_TOPICS.items()}
deadletter_topic = _bytes_topic(t.DEADLETTER)
insights_topic = _bytes_topic(t.INSIGHTS)
opportunities_topic = _bytes_topic(t.OPPORTUNITIES)
improvement_events_topic = _bytes_topic(t.IMPROVEMENT_EVENTS)
improvement_state_topic = _bytes_topic(t.IMPROVEMENT_STATE)
cycle_reports_topic = _bytes_topic(t.CYCLE_REPORTS)
commands_topic = _bytes_topic(t.COMMANDS)
audit_topic = _bytes_topic(t.AUDIT)
status_topic = _bytes_topic(t.STATUS)
healing_topic = _bytes_topic(t.HEALING)
healing_observations_topic = _bytes_topic(t.HEALING_OBSERVATIONS)
executions_topic = _bytes_topic(t.EXECUTIONS)
patterns_topic = _bytes_topic(t.PATTERNS)
series_topic = _bytes_topic(t.SERIES)
opportunity_inputs_topic = _bytes_topic(t.OPPORTUNITY_INPUTS)
config_topic = _bytes_topic(t.CONFIG)
registry_topic = _bytes_topic(t.REGISTRY)
