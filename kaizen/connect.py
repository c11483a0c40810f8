"""`kaizen connect`: the CloudWatch connectors as a process, with status heartbeats on the status topic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from agents.healing.logic.execution_observer import kaizen_execution
from connectors.cloudwatch.runner import ConnectorRunner
from connectors.cloudwatch.status import aws_clients, connector_status
from connectors.publisher import TelemetryPublisher
from streams import topics as T
from streams.records import utcnow
from streams.settings import Settings

log = structlog.get_logger(__name__)
HEARTBEAT_SECONDS = 5.0


async def _heartbeat(runner: ConnectorRunner, bootstrap: str, process_id: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        while not stop.is_set():
            report = connector_status(runner, process_id)
            await producer.send_and_wait(T.STATUS, report.to_bytes(), key=process_id.encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=HEARTBEAT_SECONDS)
    finally:
        await producer.stop()


def _poll_recorder(producer: AIOKafkaProducer) -> Callable[[str, datetime, bool, int, str | None],
                                                           Awaitable[None]]:
    """Each source poll as ExecutionMetrics on telemetry.executions (kaizen's own work, docs/healing.md)."""
    async def on_poll(source: str, started: datetime, ok: bool, records: int, error: str | None) -> None:
        em = kaizen_execution(f"connector:{source}", started, utcnow(), ok, execution_id=f"kz-{uuid.uuid4().hex[:16]}",
                              error=error)
        try:
            await producer.send(T.EXECUTIONS, em.to_json().encode(), key=f"{em.tenant_id}|{em.skill_name}".encode())
        except KafkaError as exc:
            log.warning("connector poll not recorded", source=source, error=str(exc))
    return on_poll


async def run_connectors(settings: Settings, once: bool = False) -> None:
    """Poll every source at CLOUDWATCH_STREAM_INTERVAL_SECONDS until SIGINT/SIGTERM (or once)."""
    assert settings.kafka_bootstrap_servers
    if not settings.enable_cloudwatch_streaming:
        log.warning("enable_cloudwatch_streaming is off: the connectors do not poll")
        return
    publisher = TelemetryPublisher(settings.kafka_bootstrap_servers, compression_type=settings.compression_type)
    await publisher.start()
    runner = ConnectorRunner(settings, publisher, lambda: aws_clients(settings))
    executions = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await executions.start()
    runner.on_poll = _poll_recorder(executions)
    process_id = f"connect-{socket.gethostname()}-{os.getpid()}"
    stop = asyncio.Event()
    try:
        if once:
            counts = await runner.poll_once()
            log.info("polled once", **counts)
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        beat = asyncio.create_task(_heartbeat(runner, settings.kafka_bootstrap_servers, process_id, stop))
        log.info("connectors running", sources=[s.name for s in runner.sources],
                 interval=settings.cloudwatch_stream_interval_seconds)
        await runner.run(stop)
        stop.set()
        await beat
    finally:
        await executions.stop()
        await publisher.stop()
