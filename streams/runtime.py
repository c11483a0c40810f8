"""Process-wide runtime handles of a worker: bootstrap address and the changelog stores it owns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.settings import get_settings


@dataclass
class Runtime:
    bootstrap: str = field(default_factory=lambda: get_settings().kafka_bootstrap_servers or "127.0.0.1:9092")
    stores: list[Any] = field(default_factory=list)
    process_id: str = ""
    # Tests only (streams/testing.py): makes `start_agent_store` hand out in-memory stores, no broker.
    store_factory: Any = None


runtime = Runtime()

# How long one request of the worker's Faust producer waits for the broker's reply. Faust sets aiokafka's
# request_timeout_ms to its producer_request_timeout (1200 s) and aiokafka keeps one produce request in
# flight per broker, so one reply the broker never sends would hold back everything the worker produces
# for 20 minutes — the offset commits' producer flush and every agent waiting for a changelog write with
# them, without an error (tests/integration/test_lost_produce_reply.py shows it through a proxy). With this
# bound the request times out, aiokafka closes the connection and sends the batch again on a new one; a
# batch still expires only after Faust's 1200 s, so a broker that is away a while loses nothing. It also
# bounds how long a send waits for the metadata of a topic (aiokafka uses the same timeout).
PRODUCER_REQUEST_TIMEOUT_SECONDS = 30.0


def bound_requests(producer: Any, seconds: float) -> Any:
    """Make each request of an (unstarted) AIOKafkaProducer wait at most `seconds` for its reply, keeping
    its batch expiry (request_timeout_ms: how long a batch is retried) as it is."""
    producer.client._request_timeout_ms = int(seconds * 1000)
    return producer


def bound_faust_producer_requests(seconds: float = PRODUCER_REQUEST_TIMEOUT_SECONDS) -> None:
    """Every producer Faust creates gets `bound_requests(seconds)` (see PRODUCER_REQUEST_TIMEOUT_SECONDS)."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    cls = faust_aiokafka.Producer
    if getattr(cls, "_kaizen_bounded", None) == seconds:
        return
    original = getattr(cls, "_kaizen_original_new_producer", cls._new_producer)

    def _new_producer(self: Any, transactional_id: str | None = None) -> Any:
        return bound_requests(original(self, transactional_id=transactional_id), seconds)

    cls._kaizen_original_new_producer = original  # type: ignore[attr-defined]
    cls._new_producer = _new_producer  # type: ignore[method-assign]
    cls._kaizen_bounded = seconds  # type: ignore[attr-defined]


# aiokafka's client keeps the metadata of only the topics in its `_topics` set, or of every topic while that
# set is empty. A send to a topic the cluster metadata already holds (fetched while the set was empty)
# does not add the topic to the set; the first send to a topic it does not hold yet adds that one, and
# from the next refresh on the client knows nothing else. A batch still waiting for a topic dropped so
# has no leader, and the sender's forced refreshes ask only for the other topics: the batch waits until
# it expires (20 minutes in Faust) and every flush waits with it. Seen on the clean log topic after the
# first pattern-cap dead letter (tests/integration/test_produced_topic_metadata.py shows it on a bare
# producer). Every topic a client sends to is therefore tracked from its first send.
def track_every_produced_topic() -> None:
    """Make each aiokafka client track the metadata of every topic it has sent to (see above)."""
    from aiokafka.client import AIOKafkaClient

    if getattr(AIOKafkaClient, "_kaizen_tracks_sent_topics", False):
        return
    original = AIOKafkaClient._wait_on_metadata

    async def _wait_on_metadata(self: Any, topic: str) -> Any:
        if topic not in self._topics:
            self._topics.add(topic)  # no refresh needed: the next one (or the one below) includes it
        return await original(self, topic)

    AIOKafkaClient._kaizen_original_wait_on_metadata = original  # type: ignore[attr-defined]
    AIOKafkaClient._wait_on_metadata = _wait_on_metadata  # type: ignore[method-assign]
    AIOKafkaClient._kaizen_tracks_sent_topics = True  # type: ignore[attr-defined]


# How often a producer flush that is still waiting says so. A flush waits for the broker to acknowledge
# every batch the worker has produced; Faust flushes before each offset commit and when partitions are
# revoked in a rebalance. A batch that is not acknowledged (a broker away, or a partition whose leader the
# producer does not know: `leader=None`, as track_every_produced_topic above prevented) holds the commit or
# the rebalance there, silently; this names the partitions it waits for, with the leader the producer knows.
FLUSH_WAIT_REPORT_SECONDS = 15.0
FLUSH_STALL = "producer flush waiting for the broker"


def pending_partitions(producer: Any) -> list[str]:
    """'topic[partition] leader=N' of each partition an AIOKafkaProducer still has unacknowledged batches for."""
    acc = getattr(producer, "_message_accumulator", None)
    if acc is None:
        return []
    tps = {tp for tp, batches in acc._batches.items() if batches} | {b.tp for b in acc._pending_batches}
    cluster = producer.client.cluster
    return sorted(f"{tp.topic}[{tp.partition}] leader={cluster.leader_for_partition(tp)}" for tp in tps)


def watch_faust_producer_flushes(every: float = FLUSH_WAIT_REPORT_SECONDS) -> None:
    """Every flush of a Faust producer that waits longer than `every` seconds logs FLUSH_STALL (then again
    every `every` seconds) with the partitions it waits for. It changes nothing else: the flush still
    waits for the broker, since giving up would lose the writes."""
    import asyncio

    import structlog
    from faust.transport.drivers import aiokafka as faust_aiokafka

    cls = faust_aiokafka.Producer
    if getattr(cls, "_kaizen_flush_watched", None) == every:
        return
    original = getattr(cls, "_kaizen_original_flush", cls.flush)
    log = structlog.get_logger("streams.producer")

    async def flush(self: Any) -> None:
        task = asyncio.ensure_future(original(self))
        waited = 0.0
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=every)
                if done:
                    return task.result()
                waited += every
                log.warning(FLUSH_STALL, waited_s=waited, pending=pending_partitions(self._producer)[:20])
        except asyncio.CancelledError:
            task.cancel()
            raise

    cls._kaizen_original_flush = original  # type: ignore[attr-defined]
    cls.flush = flush  # type: ignore[method-assign]
    cls._kaizen_flush_watched = every  # type: ignore[attr-defined]


def survives_broker_outage(fn):  # type: ignore[no-untyped-def]
    """For periodic tasks: a broker that is away (restarting) is logged and retried on the next tick
    instead of crashing the worker; any other error is logged with its traceback and the tick skipped.
    Faust stops the whole worker when a timer raises: one tick that failed on a bad value (the
    scheduler once did, on an interval longer than a cycle's window) stopped every stage with it."""
    import functools

    import structlog
    from aiokafka.errors import KafkaError

    log = structlog.get_logger(fn.__module__)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            await fn(*args, **kwargs)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("periodic task skipped: broker unavailable", task=fn.__name__, error=str(exc)[:200])
        except Exception:  # noqa: BLE001 - see the docstring; the traceback is in the log
            log.exception("periodic task failed; skipped until its next tick", task=fn.__name__)

    return wrapper
