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
from streams.records import MetricDataPoint


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_threshold_and_half_opens_after_recovery() -> None:
    clock = Clock()
    b = CircuitBreaker("cw", failure_threshold=3, recovery_seconds=60, clock=clock)
    for _ in range(2):
        b.before_call()
        b.record_failure("down")
    assert b.current_state() == "closed"
    b.before_call()
    b.record_failure("down")
    assert b.current_state() == "open" and b.opens == 1
    with pytest.raises(BreakerOpenError):
        b.before_call()
    clock.t += 59.9
    assert b.is_open()
    clock.t += 0.2
    assert b.current_state() == "half_open"
    b.before_call()
    b.record_failure("still down")  # a failed trial opens it again at once
    assert b.current_state() == "open" and b.opens == 2
    clock.t += 61
    b.before_call()
    b.record_success()
    assert b.current_state() == "closed" and b.consecutive_failures == 0
    s = b.status()
    assert s["calls"] == 5 and s["failures"] == 4 and s["refused"] == 1 and s["last_success"]


def test_success_resets_consecutive_failures() -> None:
    b = CircuitBreaker("cw", failure_threshold=3, clock=Clock())
    for _ in range(5):
        b.record_failure("x")
        b.record_failure("x")
        b.record_success()
    assert b.current_state() == "closed" and b.opens == 0


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


async def test_guarded_client_retries_throttling_then_counts_outages() -> None:
    flaky = FlakyClient([_client_error("Throttling", 400), _client_error("InternalError", 500)])
    b = CircuitBreaker("cw", clock=Clock())
    g = GuardedClient("cloudwatch", flaky, b, attempts=3, backoff_base=0.001)
    assert await g.call("list_metrics") == {"Metrics": []}
    assert flaky.calls == 3 and b.consecutive_failures == 0
    down = FlakyClient([EndpointConnectionError(endpoint_url="http://x")] * 3)
    g2 = GuardedClient("cloudwatch", down, b, attempts=3, backoff_base=0.001)
    for _ in range(3):
        with pytest.raises(EndpointConnectionError):
            await g2.call("list_metrics")
    assert down.calls == 3  # connection errors are left to botocore's own retry
    assert b.current_state() == "open"
    with pytest.raises(BreakerOpenError):
        await g2.call("list_metrics")
    bad = FlakyClient([_client_error("InvalidParameterValue", 400)])
    b3 = CircuitBreaker("cw3", clock=Clock())
    with pytest.raises(ClientError):
        await GuardedClient("cloudwatch", bad, b3, backoff_base=0.001).call("list_metrics")
    assert b3.consecutive_failures == 0 and bad.calls == 1


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
