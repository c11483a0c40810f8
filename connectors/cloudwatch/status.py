"""What a connector process reports about itself, and the boto3 clients every CloudWatch source uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3

from connectors.cloudwatch.client import AwsClients, boto_config
from connectors.cloudwatch.runner import ConnectorRunner
from streams.records import StatusReport
from streams.settings import Settings


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
