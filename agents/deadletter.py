"""Sending a record kaizen could not use to the dead-letter topic, with the reason and the original bytes."""

from __future__ import annotations

import structlog

from streams import app as A
from streams.metrics import DEADLETTERS
from streams.records import DeadLetter

log = structlog.get_logger(__name__)


async def dead_letter(source_topic: str, kind: str, reason: str, error: str, value: bytes | None,
                      partition: int, offset: int) -> DeadLetter:
    """Publish the dead letter (keyed by source topic) and count it under `kind`."""
    dead = DeadLetter(reason=reason, error=error[:2000], source_topic=source_topic, partition=partition,
                      offset=offset, original=(value or b"").decode("utf-8", errors="backslashreplace"))
    await A.deadletter_topic.send(key=source_topic.encode(), value=dead.to_bytes())
    DEADLETTERS.labels(kind).inc()
    log.error("record dead-lettered", topic=source_topic, reason=reason, error=error[:300], partition=partition,
              offset=offset)
    return dead
