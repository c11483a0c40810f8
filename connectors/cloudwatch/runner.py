"""Runs every CloudWatch source at the stream interval, publishes to Kafka, falls back to JSONL while a breaker is open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError

from connectors.breaker import BreakerOpenError, CircuitBreaker
from connectors.cloudwatch.base import Source, SourceError
from connectors.cloudwatch.client import AwsClients, GuardedClient, make_breakers
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.events import AlarmsSource, QueueSource
from connectors.cloudwatch.logs import LogsSource
from connectors.cloudwatch.mapping import tenant_allowed
from connectors.cloudwatch.metrics import MetricsSource
from connectors.fallback import FallbackReader
from connectors.publisher import TelemetryPublisher
from streams.records import utcnow
from streams.settings import Settings

log = structlog.get_logger(__name__)

ALL_SOURCES = ("metrics", "logs", "alarms", "queue")


class ConnectorRunner:
    """All CloudWatch sources of one process (run it on one leader: cursors are local files).

    `clients` are boto3 clients (AwsClients) or a zero-argument factory returning them. Each client
    gets its own circuit breaker (CLOUDWATCH_BREAKER_FAILURE_THRESHOLD / _RECOVERY_SECONDS, monotonic
    `clock` injectable); `now` gives the wall-clock time the windows are computed from. A source whose
    breaker is open is skipped, and the fallback JSONL of its kind is read instead; when the breaker
    half-opens the next poll is a trial, and on success the source resumes from its cursor, so the gap
    of the outage is filled.
    """

    def __init__(
        self, settings: Settings, publisher: TelemetryPublisher, clients: AwsClients | Callable[[], AwsClients], *,
        cursors: CursorStore | None = None, clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow, sources: tuple[str, ...] = ALL_SOURCES,
        queue_wait_seconds: int = 2, metrics_lookback_seconds: int | None = None,
        logs_lookback_seconds: int = 3600,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.cursors = cursors or CursorStore(settings.kaizen_data_dir / "cursors")
        self._now = now
        aws = clients if isinstance(clients, AwsClients) else clients()
        self.breakers: dict[str, CircuitBreaker] = make_breakers(settings, clock)
        guarded = {
            name: GuardedClient(name, client, self.breakers[name])
            for name, client in (("cloudwatch", aws.cloudwatch), ("logs", aws.logs), ("sqs", aws.sqs))
            if client is not None
        }
        self.sources: list[Source] = []
        if "metrics" in sources:
            for ns in [n.strip() for n in settings.cloudwatch_namespace.split(",") if n.strip()]:
                self.sources.append(MetricsSource(guarded["cloudwatch"], self.cursors, settings, namespace=ns,
                                                  initial_lookback_seconds=metrics_lookback_seconds))
        if "logs" in sources:
            self.sources.append(LogsSource(guarded["logs"], self.cursors, settings,
                                           initial_lookback_seconds=logs_lookback_seconds))
        if "alarms" in sources:
            self.sources.append(AlarmsSource(guarded["cloudwatch"], self.cursors, settings))
        if "queue" in sources and settings.cloudwatch_events_queue_url and "sqs" in guarded:
            self.sources.append(QueueSource(guarded["sqs"], settings, wait_seconds=queue_wait_seconds))
        self.fallback = FallbackReader(settings.cloudwatch_fallback_dir, self.cursors)
        self.using_fallback: dict[str, bool] = {s.kind: False for s in self.sources}
        self._source_stats: dict[str, dict[str, Any]] = {
            s.name: {"records": 0, "dead_letters": 0, "polls": 0, "errors": 0, "skipped_breaker_open": 0,
                     "last_success": None, "last_error": None} for s in self.sources}
        self.polls = 0
        self.last_poll: datetime | None = None
        self.last_error: str | None = None
        self.running = False
        # Called after every source poll with (source name, started, ok, records, error): kaizen records
        # its own connector polls as execution metrics through it (docs/healing.md).
        self.on_poll: Callable[[str, datetime, bool, int, str | None], Awaitable[None]] | None = None

    # --- one round ------------------------------------------------------------------------------
    async def poll_once(self) -> dict[str, int]:
        """Poll every source once (concurrently), then the fallback of every kind whose breaker is open.

        Returns the number of records published per source (and per `fallback:<kind>`).
        """
        now = self._now()
        results = await asyncio.gather(*(self._poll_source(s, now) for s in self.sources), return_exceptions=True)
        counts: dict[str, int] = {}
        for source, result in zip(self.sources, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # Kafka or cursor-file failure: nothing was committed, the next poll retries
            counts[source.name] = result
        for kind in sorted(self.using_fallback):
            open_now = any(self.breakers[s.client_name].is_open() for s in self.sources if s.kind == kind)
            if open_now and not self.using_fallback[kind]:
                log.warning("circuit breaker open; reading the local fallback", kind=kind)
            self.using_fallback[kind] = open_now
            if open_now:
                counts[f"fallback:{kind}"] = await self._poll_fallback(kind)
        self.polls += 1
        self.last_poll = now
        return counts

    async def _poll_source(self, source: Source, now: datetime) -> int:
        if self.on_poll is None:
            return await self._poll_source_once(source, now)
        started = utcnow()
        errors = self._source_stats[source.name]["errors"]
        try:
            n = await self._poll_source_once(source, now)
        except Exception as exc:
            await self.on_poll(source.name, started, False, 0, f"{type(exc).__name__}: {exc}"[:300])
            raise
        failed = self._source_stats[source.name]["errors"] > errors
        await self.on_poll(source.name, started, not failed, n,
                           self._source_stats[source.name]["last_error"] if failed else None)
        return n

    async def _poll_source_once(self, source: Source, now: datetime) -> int:
        st = self._source_stats[source.name]
        if self.breakers[source.client_name].is_open():
            st["skipped_breaker_open"] += 1
            return 0
        st["polls"] += 1
        try:
            batch = await source.collect(now)
        except BreakerOpenError as exc:
            st["skipped_breaker_open"] += 1
            st["last_error"] = str(exc)
            return 0
        except (BotoCoreError, ClientError, SourceError) as exc:
            st["errors"] += 1
            st["last_error"] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("CloudWatch source failed", source=source.name, error=st["last_error"])
            return 0
        await self.publisher.publish(batch.kind, batch.records)
        await self.publisher.publish_dead(batch.dead)
        await batch.commit()
        st["records"] += len(batch.records)
        st["dead_letters"] += len(batch.dead)
        st["last_success"] = now.isoformat()
        st["last_stats"] = batch.stats
        return len(batch.records)

    async def _poll_fallback(self, kind: str) -> int:
        batch = await asyncio.to_thread(self.fallback.read, kind)
        tenants = self.settings.cloudwatch_tenant_filter
        records = [r for r in batch.records if tenant_allowed(str(getattr(r, "tenant_id", "")), tenants)]
        await self.publisher.publish(kind, records)
        await self.publisher.publish_dead(batch.dead)
        await asyncio.to_thread(self.fallback.commit, batch)
        return len(records)

    # --- the loop -------------------------------------------------------------------------------
    async def run(self, stop_event: asyncio.Event) -> None:
        """Poll every CLOUDWATCH_STREAM_INTERVAL_SECONDS until `stop_event` is set."""
        self.running = True
        try:
            while not stop_event.is_set():
                try:
                    await self.poll_once()
                    self.last_error = None
                except (KafkaError, OSError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    log.error("connector poll failed; retrying next interval", error=self.last_error)
                try:
                    await asyncio.wait_for(stop_event.wait(), timeout=self.settings.cloudwatch_stream_interval_seconds)
                except TimeoutError:
                    pass
        finally:
            self.running = False

    def status(self) -> dict[str, Any]:
        """Breakers, sources, fallback use and counts as a plain dict (for get_system_status)."""
        return {
            "running": self.running,
            "polls": self.polls,
            "last_poll": self.last_poll.isoformat() if self.last_poll else None,
            "last_error": self.last_error,
            "interval_seconds": self.settings.cloudwatch_stream_interval_seconds,
            "using_fallback": dict(self.using_fallback),
            "fallback_dir": str(self.settings.cloudwatch_fallback_dir),
            "fallback_records": dict(self.fallback.read_counts),
            "breakers": {name: b.status() for name, b in self.breakers.items()},
            "sources": {
                s.name: {"kind": s.kind, "client": s.client_name,
                         "breaker_state": self.breakers[s.client_name].current_state(),
                         **self._source_stats[s.name], **s.status()}
                for s in self.sources
            },
            "published": dict(self.publisher.records_sent),
        }
