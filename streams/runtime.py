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
