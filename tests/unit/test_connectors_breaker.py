"""Circuit breaker transitions with an injected clock; cursor files; the JSONL fallback reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from connectors.breaker import BreakerOpenError, CircuitBreaker
from connectors.cloudwatch.client import GuardedClient, is_outage, is_retryable
from connectors.cloudwatch.cursor import CursorStore
from connectors.fallback import FallbackReader
from streams.errors import TransientError
from streams.records import MetricDataPoint


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _fail(b: CircuitBreaker, error: str = "down") -> None:
    with pytest.raises(ConnectionError), b.guard():
        raise ConnectionError(error)


def _succeed(b: CircuitBreaker) -> None:
    with b.guard():
        pass


def test_breaker_opens_after_threshold_and_half_opens_after_recovery() -> None:
    clock = Clock()
    b = CircuitBreaker("cw", failure_threshold=3, recovery_seconds=60, clock=clock)
    for _ in range(2):
        _fail(b)
    assert b.current_state() == "closed" and b.consecutive_failures == 2
    _fail(b)
    assert b.current_state() == "open" and b.opens == 1
    with pytest.raises(BreakerOpenError) as refused:
        _succeed(b)
    assert isinstance(refused.value, TransientError) and "next trial in 60.0s" in str(refused.value)
    clock.t += 59.9
    assert b.is_open()
    clock.t += 0.2
    assert b.current_state() == "half_open" and not b.is_open()
    _fail(b, "still down")  # a failed trial opens it again at once
    assert b.current_state() == "open" and b.opens == 2
    clock.t += 61
    _succeed(b)
    assert b.current_state() == "closed" and b.consecutive_failures == 0
    s = b.status()
    assert s["calls"] == 5 and s["failures"] == 4 and s["refused"] == 1 and s["last_success"]
    assert s["state"] == "closed" and s["opens"] == 2 and "still down" in s["last_error"]


def test_success_resets_consecutive_failures() -> None:
    b = CircuitBreaker("cw", failure_threshold=3, clock=Clock())
    for _ in range(5):
        _fail(b)
        _fail(b)
        _succeed(b)
    assert b.current_state() == "closed" and b.opens == 0


async def test_guard_wraps_awaits_and_a_cancelled_call_is_no_failure() -> None:
    import asyncio

    b = CircuitBreaker("cw", failure_threshold=1, clock=Clock())

    async def call() -> int:
        with b.guard():
            await asyncio.sleep(0)
            return 7

    assert await call() == 7
    task = asyncio.create_task(asyncio.sleep(10))

    async def cancelled() -> None:
        with b.guard():
            await task

    waiter = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert b.current_state() == "closed" and b.failures == 0


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_error_classification() -> None:
    assert is_retryable(_client_error("Throttling", 400))
    assert is_retryable(_client_error("InternalError", 500))
    assert not is_retryable(_client_error("InvalidParameterValue", 400))
    assert is_outage(EndpointConnectionError(endpoint_url="http://x"))
    assert is_outage(_client_error("AccessDeniedException", 400))
    assert not is_outage(_client_error("ResourceNotFoundException", 400))


class FlakyClient:
    """A stand-in with the boto3 method shape (the real endpoint is tested in tests/integration)."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    def list_metrics(self, **kwargs: object) -> dict[str, object]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"Metrics": []}


async def test_guarded_client_tries_once_and_counts_only_outages() -> None:
    """botocore is the one retry layer: a call that reaches the guard is not tried again here."""
    b = CircuitBreaker("cw", clock=Clock())
    throttled = FlakyClient([_client_error("Throttling", 400)])
    with pytest.raises(ClientError):
        await GuardedClient("cloudwatch", throttled, b).call("list_metrics")
    assert throttled.calls == 1 and b.consecutive_failures == 1
    assert await GuardedClient("cloudwatch", throttled, b).call("list_metrics") == {"Metrics": []}
    assert b.consecutive_failures == 0
    down = FlakyClient([EndpointConnectionError(endpoint_url="http://x")] * 3)
    g2 = GuardedClient("cloudwatch", down, b)
    for _ in range(3):
        with pytest.raises(EndpointConnectionError):
            await g2.call("list_metrics")
    assert down.calls == 3 and b.current_state() == "open"
    with pytest.raises(BreakerOpenError):
        await g2.call("list_metrics")
    assert down.calls == 3  # refused: not attempted
    bad = FlakyClient([_client_error("InvalidParameterValue", 400)])
    b3 = CircuitBreaker("cw3", clock=Clock())
    b3_client = GuardedClient("cloudwatch", bad, b3)
    _fail(b3)
    with pytest.raises(ClientError):
        await b3_client.call("list_metrics")
    assert b3.consecutive_failures == 0 and bad.calls == 1  # the endpoint answered: not an outage


def test_botocore_standard_mode_is_the_retry_layer() -> None:
    """A real botocore client against a local endpoint answering 503: MAX_ATTEMPTS tries, then the error."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import boto3

    from connectors.cloudwatch.client import MAX_ATTEMPTS, boto_config

    hits: list[str] = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        logs = boto3.client("logs", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{server.server_port}",
                            aws_access_key_id="x", aws_secret_access_key="x",
                            config=boto_config(connect_timeout=1, read_timeout=2))
        with pytest.raises(ClientError) as info:
            logs.describe_log_groups()
    finally:
        server.shutdown()
    assert len(hits) == MAX_ATTEMPTS == 3
    assert is_retryable(info.value) and is_outage(info.value)


def test_cursor_store_roundtrip(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "cursors")
    assert store.load("metrics:My/NS") == {}
    store.save("metrics:My/NS", {"end": 1200, "emitted": {"a": [900]}})
    assert store.load("metrics:My/NS")["end"] == 1200
    assert store.path("metrics:My/NS") != store.path("metrics:My_NS")
    store.path("x").write_text("[1]")
    with pytest.raises(ValueError):
        store.load("x")


def test_fallback_reads_complete_lines_with_offset_cursor(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "cursors")
    reader = FallbackReader(tmp_path / "fb", store)
    assert reader.read("metric").records == []
    (tmp_path / "fb").mkdir()
    p = tmp_path / "fb" / "metrics.jsonl"
    point = MetricDataPoint(metric_name="Lat", value=1.0, timestamp=datetime(2026, 1, 1, tzinfo=UTC), tenant_id="a")
    p.write_bytes(point.to_bytes() + b"\n" + b'{"metric_name": ""}\n' + b'{"metric_name": "half')
    batch = reader.read("metric")
    assert [r.model_dump()["event_id"] for r in batch.records] == [point.event_id]
    assert len(batch.dead) == 1 and "invalid metric line" in batch.dead[0].reason
    assert reader.read("metric").records  # not committed yet: read again
    reader.commit(batch)
    assert reader.read("metric").records == []
    with open(p, "ab") as fh:
        fh.write(b'", "value": 2, "timestamp": "2026-01-01T00:05:00Z", "tenant_id": "a"}\n')
    second = reader.read("metric")
    assert len(second.records) == 1 and second.records[0].model_dump()["metric_name"] == "half"
    reader.commit(second)
    p.write_bytes(point.to_bytes() + b"\n")  # truncated/replaced: read from the start
    assert len(reader.read("metric").records) == 1
