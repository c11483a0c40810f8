"""boto3 clients made safe for the event loop: calls in a thread, retried with jittered backoff, behind a breaker."""

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
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

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
    """Throttling and 5xx answers are retried here; connection errors are retried by botocore itself."""
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

    def __init__(
        self, service: str, client: Any, breaker: CircuitBreaker, *, attempts: int = 3,
        backoff_base: float = 0.2, backoff_max: float = 5.0,
    ) -> None:
        self.service = service
        self.client = client
        self.breaker = breaker
        self.attempts = max(1, attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max

    async def call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            self.breaker.before_call()
        except BreakerOpenError:
            API_CALLS.labels(self.service, operation, "refused").inc()
            raise
        method: Callable[..., dict[str, Any]] = getattr(self.client, operation)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retryable),
                wait=wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
                stop=stop_after_attempt(self.attempts),
                reraise=True,
            ):
                with attempt:
                    result = await asyncio.to_thread(method, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            API_CALLS.labels(self.service, operation, "error").inc()
            if is_outage(exc):
                self.breaker.record_failure(f"{operation}: {exc}")
            else:
                self.breaker.record_success()
            raise
        API_CALLS.labels(self.service, operation, "ok").inc()
        self.breaker.record_success()
        return result


@dataclass
class AwsClients:
    """The boto3 clients the connectors use (any may be a stub with the same methods in tests)."""

    cloudwatch: Any
    logs: Any
    sqs: Any | None = None


def boto_config(*, max_attempts: int = 3, connect_timeout: float = 2.0, read_timeout: float = 30.0) -> Config:
    """botocore's own retry (standard mode: connection errors, throttling, 5xx) with short timeouts."""
    return Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
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
