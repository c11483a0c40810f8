"""What every CloudWatch source returns: a batch of records plus the commit to run once Kafka acknowledged it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from streams.errors import ExternalError
from streams.records import DeadLetter, Record


class SourceError(ExternalError):
    """A source could not complete its poll for a reason other than an AWS client error."""


async def _nothing() -> None:
    return None


@dataclass
class SourceBatch:
    """Records of one kind from one poll; `commit` advances the cursor (or deletes SQS messages)."""

    kind: str
    records: list[Record] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    commit: Callable[[], Awaitable[None]] = _nothing
    stats: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """A CloudWatch source: `collect(now)` reads what is new since its cursor, without advancing it."""

    name: str
    kind: str
    client_name: str  # which AWS client (and breaker) it uses: cloudwatch | logs | sqs

    async def collect(self, now: datetime) -> SourceBatch: ...

    def status(self) -> dict[str, Any]: ...
