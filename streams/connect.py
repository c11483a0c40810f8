"""`kaizen connect`: the CloudWatch connectors as a process, with status heartbeats on the status topic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from datetime import UTC, datetime
from typing import Any

import boto3
import structlog
from aiokafka import AIOKafkaProducer

from connectors.cloudwatch.client import AwsClients, boto_config
from connectors.cloudwatch.runner import ConnectorRunner
from connectors.publisher import TelemetryPublisher
from streams import topics as T
from streams.records import StatusReport
from streams.settings import Settings

log = structlog.get_logger(__name__)
HEARTBEAT_SECONDS = 5.0


def aws_clients(settings: Settings) -> AwsClients:
    """boto3 clients for CloudWatch, Logs and SQS (AWS_ENDPOINT_URL honoured: moto or LocalStack)."""
    kw: dict[str, Any] = {"region_name": settings.aws_region, "config": boto_config()}
    if settings.aws_endpoint_url:
        kw["endpoint_url"] = settings.aws_endpoint_url
    return AwsClients(cloudwatch=boto3.client("cloudwatch", **kw), logs=boto3.client("logs", **kw),
                      sqs=boto3.client("sqs", **kw))


def connector_status(runner: ConnectorRunner, process_id: str) -> StatusReport:
    st = runner.status()
    breakers = st.get("breakers", {})
    detail = {
        **st,
        "breakers": {name: b.get("state") for name, b in breakers.items()},
        "breaker_details": breakers,
        "cloudwatch_api_calls": sum(int(b.get("calls", 0)) for b in breakers.values()),
        "circuit_breaker_opens": sum(int(b.get("opens", 0)) for b in breakers.values()),
    }
    healthy = all(b.get("state") != "open" for b in breakers.values())
    return StatusReport(process_id=process_id, role="connector", timestamp=datetime.now(UTC), healthy=healthy,
                        detail=detail)


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


async def run_connectors(settings: Settings, once: bool = False) -> None:
    """Poll every source at CLOUDWATCH_STREAM_INTERVAL_SECONDS until SIGINT/SIGTERM (or once)."""
    assert settings.kafka_bootstrap_servers
    if not settings.enable_cloudwatch_streaming:
        log.warning("enable_cloudwatch_streaming is off: the connectors do not poll")
        return
    publisher = TelemetryPublisher(settings.kafka_bootstrap_servers)
    await publisher.start()
    runner = ConnectorRunner(settings, publisher, lambda: aws_clients(settings))
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
        await publisher.stop()
