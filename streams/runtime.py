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


def survives_broker_outage(fn):  # type: ignore[no-untyped-def]
    """For periodic tasks: a broker that is away (restarting) is logged and retried on the next tick
    instead of crashing the worker."""
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

    return wrapper
