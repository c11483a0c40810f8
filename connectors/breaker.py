"""A circuit breaker per outside client (pybreaker): open after N consecutive failures, a trial after a pause.

pybreaker keeps the state machine (closed → open after `failure_threshold` consecutive failures → a
trial call after `recovery_seconds` → closed on success, open again on failure).  This module adds
what kaizen needs around it: an async-friendly `guard()` block, refusals raised as BreakerOpenError
(a TransientError), an injectable monotonic clock, and the counters status reports show.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pybreaker
from prometheus_client import Counter

from streams.errors import TransientError

BREAKER_OPENS = Counter(
    "kaizen_circuit_breaker_opens_total", "Times a circuit breaker opened", ["breaker"]
)

BreakerState = Literal["closed", "open", "half_open"]


class BreakerOpenError(TransientError):
    """The breaker is open: the call was not attempted."""

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit breaker '{name}' is open; next trial in {max(0.0, retry_in):.1f}s")
        self.name = name
        self.retry_in = retry_in


class _ClockStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's in-memory state, with the opening time taken from a monotonic (injectable) clock:
    pybreaker compares `opened_at` with the wall clock, so it is reported as now minus the time open."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self.clock = clock
        self.opened_mono: float | None = None

    @property
    def opened_at(self) -> datetime | None:
        if self.opened_mono is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=self.clock() - self.opened_mono)

    @opened_at.setter
    def opened_at(self, _wall: datetime) -> None:
        self.opened_mono = self.clock()


class _Counters(pybreaker.CircuitBreakerListener):
    """Counts calls, failures and openings for the status report and the prometheus counter."""

    def __init__(self, owner: CircuitBreaker) -> None:
        self.owner = owner

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any) -> None:
        self.owner.calls += 1

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.owner.failures += 1
        self.owner.last_failure = datetime.now(UTC)
        self.owner.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.owner.last_success = datetime.now(UTC)

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if new_state is not None and new_state.name == pybreaker.STATE_OPEN:
            self.owner.opens += 1
            BREAKER_OPENS.labels(breaker=self.owner.name).inc()


def _not_a_failure(exc: BaseException) -> bool:
    # a cancelled task or an interrupt says nothing about the remote end
    return not isinstance(exc, Exception)


class CircuitBreaker:
    """One outside client's breaker.  `with breaker.guard(): await call()` — an exception leaving the
    block counts as a failure of the client (callers let only outage-type errors leave it)."""

    def __init__(self, name: str, failure_threshold: int = 3, recovery_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_seconds = recovery_seconds
        self.clock = clock
        self.calls = self.failures = self.refused = self.opens = 0
        self.last_success: datetime | None = None
        self.last_failure: datetime | None = None
        self.last_error: str | None = None
        self._storage = _ClockStorage(clock)
        self._cb = pybreaker.CircuitBreaker(
            fail_max=failure_threshold, reset_timeout=recovery_seconds, name=name, state_storage=self._storage,
            listeners=[_Counters(self)], exclude=[_not_a_failure], throw_new_error_on_trip=False)

    @property
    def consecutive_failures(self) -> int:
        return self._cb.fail_counter

    def _open_for(self) -> float:
        opened = self._storage.opened_mono
        return 0.0 if opened is None else self.clock() - opened

    def current_state(self) -> BreakerState:
        """closed, open, or half_open once the recovery pause is over (the next call is the trial)."""
        state = self._cb.current_state
        if state == pybreaker.STATE_OPEN:
            return "half_open" if self._open_for() >= self.recovery_seconds else "open"
        return "half_open" if state == pybreaker.STATE_HALF_OPEN else "closed"

    def is_open(self) -> bool:
        """True while calls would be refused (open and the recovery pause not over)."""
        return self.current_state() == "open"

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block as one call through the breaker; BreakerOpenError when it may not be attempted."""
        try:
            with self._cb.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            self.refused += 1
            raise BreakerOpenError(self.name, self.recovery_seconds - self._open_for()) from exc

    def status(self) -> dict[str, Any]:
        """A plain dict for status reports."""
        return {
            "state": self.current_state(),
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
