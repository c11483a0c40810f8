"""boto3 clients made safe for the event loop: calls in a thread, behind a circuit breaker.

One retry layer: botocore's own (standard mode, `boto_config`): it retries connection errors,
throttling and 5xx answers with jittered exponential backoff, MAX_ATTEMPTS tries in all.  Nothing
here retries again; one exhausted call is one failure for the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import Counter

from connectors.breaker import BreakerOpenError, CircuitBreaker
from streams.settings import Settings

API_CALLS = Counter(
    "kaizen_cloudwatch_api_calls_total",
    "AWS API calls made by the CloudWatch connectors",
    ["service", "operation", "outcome"],
)

THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestThrottledException", "LimitExceededException",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalServiceError",
})
AUTH_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch",
})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_retryable(exc: BaseException) -> bool:
    """Throttling and 5xx answers: what botocore's standard mode has already retried when it reaches us."""
    return isinstance(exc, ClientError) and (error_code(exc) in THROTTLE_CODES or http_status(exc) >= 500)


def is_outage(exc: BaseException) -> bool:
    """Errors that say the endpoint is unavailable to us (these count towards opening the breaker).

    A 4xx answer such as a validation error or a missing log group proves the endpoint is up: it is
    raised to the caller but does not count as a failure of the endpoint.
    """
    if isinstance(exc, BotoCoreError):
        return True
    if isinstance(exc, ClientError):
        return is_retryable(exc) or error_code(exc) in AUTH_CODES
    return False


class GuardedClient:
    """One boto3 client behind one circuit breaker; `await call("get_metric_data", **kwargs)`."""

    def __init__(self, service: str, client: Any, breaker: CircuitBreaker) -> None:
        self.service = service
        self.client = client
        self.breaker = breaker

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method: Callable[..., dict[str, Any]] = getattr(self.client, operation)
        answered: ClientError | None = None  # an error answer from a reachable endpoint
        try:
            with self.breaker.guard():
                try:
                    result = await asyncio.to_thread(method, **kwargs)
                except ClientError as exc:
                    if is_outage(exc):
                        raise
                    answered = exc  # e.g. a validation error: the endpoint is up, the breaker sees a success
        except BreakerOpenError:
            API_CALLS.labels(self.service, operation, "refused").inc()
            raise
        except (BotoCoreError, ClientError):
            API_CALLS.labels(self.service, operation, "error").inc()
            raise
        if answered is not None:
            API_CALLS.labels(self.service, operation, "error").inc()
            raise answered
        API_CALLS.labels(self.service, operation, "ok").inc()
        return result


@dataclass
class AwsClients:
    """The boto3 clients the connectors use (any may be a stub with the same methods in tests)."""

    cloudwatch: Any
    logs: Any
    sqs: Any | None = None


MAX_ATTEMPTS = 3  # tries per call in all (botocore counts the first one)


def boto_config(*, max_attempts: int = MAX_ATTEMPTS, connect_timeout: float = 2.0, read_timeout: float = 30.0
                ) -> Config:
    """The one retry layer: botocore's standard mode (connection errors, throttling, 5xx; jittered
    exponential backoff) with `max_attempts` tries in all, and short timeouts."""
    return Config(
        # total_max_attempts counts the first try (botocore's `max_attempts` would count retries only)
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout, read_timeout=read_timeout,
    )


def make_clients(
    settings: Settings, *, endpoint_url: str | None = None, config: Config | None = None,
    session: boto3.session.Session | None = None,
) -> AwsClients:
    """Real boto3 clients for the settings' region and endpoint (AWS_ENDPOINT_URL: moto/LocalStack)."""
    sess = session or boto3.session.Session()
    cfg = config or boto_config()
    url = endpoint_url or settings.aws_endpoint_url
    kw: dict[str, Any] = {"region_name": settings.aws_region, "config": cfg}
    if url:
        kw["endpoint_url"] = url
    return AwsClients(
        cloudwatch=sess.client("cloudwatch", **kw),
        logs=sess.client("logs", **kw),
        sqs=sess.client("sqs", **kw),
    )


def make_breakers(settings: Settings, clock: Callable[[], float] = time.monotonic) -> dict[str, CircuitBreaker]:
    """One breaker per AWS client, thresholds from CLOUDWATCH_BREAKER_* settings."""
    return {
        name: CircuitBreaker(
            name=f"cloudwatch.{name}",
            failure_threshold=settings.cloudwatch_breaker_failure_threshold,
            recovery_seconds=settings.cloudwatch_breaker_recovery_seconds,
            clock=clock,
        )
        for name in ("cloudwatch", "logs", "sqs")
    }
