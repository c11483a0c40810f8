"""A circuit breaker per outside client: closed → open after N consecutive failures → half-open after a pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter

BREAKER_OPENS = Counter(
    "kaizen_circuit_breaker_opens_total", "Times a circuit breaker opened", ["breaker"]
)

BreakerState = Literal["closed", "open", "half_open"]


class BreakerOpenError(RuntimeError):
    """The breaker is open: the call was not attempted."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit breaker '{name}' is open; next trial in {retry_in:.1f}s")
        self.name = name
        self.retry_in = retry_in


@dataclass
class CircuitBreaker:
    """Counts consecutive failures of one client; time comes from an injectable monotonic clock.

    closed: calls pass; `failure_threshold` consecutive failures open it.
    open: calls are refused (BreakerOpenError) until `recovery_seconds` passed since it opened.
    half_open: calls pass as trials; a success closes it, a failure opens it again.
    """

    name: str
    failure_threshold: int = 3
    recovery_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    consecutive_failures: int = 0
    calls: int = 0
    failures: int = 0
    refused: int = 0
    opens: int = 0
    opened_at: float | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    _wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)

    def _refresh(self) -> None:
        if self.state == "open" and self.opened_at is not None:
            if self.clock() - self.opened_at >= self.recovery_seconds:
                self.state = "half_open"

    def current_state(self) -> BreakerState:
        self._refresh()
        return self.state

    def is_open(self) -> bool:
        """True while calls would be refused (open and the recovery pause not over)."""
        return self.current_state() == "open"

    def before_call(self) -> None:
        """Raise BreakerOpenError when the call must not be attempted; otherwise count it."""
        self._refresh()
        if self.state == "open":
            self.refused += 1
            assert self.opened_at is not None
            raise BreakerOpenError(self.name, self.recovery_seconds - (self.clock() - self.opened_at))
        self.calls += 1

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.state = "closed"
        self.opened_at = None
        self.last_success = self._wall()

    def record_failure(self, error: BaseException | str) -> None:
        self.failures += 1
        self.consecutive_failures += 1
        self.last_failure = self._wall()
        self.last_error = str(error)[:300]
        if self.state == "half_open" or (
            self.state == "closed" and self.consecutive_failures >= self.failure_threshold
        ):
            self.state = "open"
            self.opened_at = self.clock()
            self.opens += 1
            BREAKER_OPENS.labels(breaker=self.name).inc()

    def status(self) -> dict[str, Any]:
        """A plain dict for status reports."""
        self._refresh()
        return {
            "state": self.state,
            "calls": self.calls,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "refused": self.refused,
            "opens": self.opens,
            "failure_threshold": self.failure_threshold,
            "recovery_seconds": self.recovery_seconds,
            "last_success": self.last_success.isoformat() if self.last_success else None,
            "last_failure": self.last_failure.isoformat() if self.last_failure else None,
            "last_error": self.last_error,
        }
