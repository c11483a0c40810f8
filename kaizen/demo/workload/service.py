"""One second of a simulated service as CloudWatch sees it: metrics and log lines (the lab's simulator,
kaizen/lab/sim.py, makes them; the reporter sends them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

Value = float | bool


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str


@dataclass(frozen=True)
class Tick:
    """One second of the service as CloudWatch sees it."""

    timestamp: datetime
    requests: int
    latency_ms: float  # average
    latency_max_ms: float
    error_rate_pct: float  # Percent (0..100)
    cache_hit_rate_pct: float | None  # Percent (0..100); None: the service has no cache
    active_users: float
    canary_share: float
    canary_latency_ms: float | None = None  # the canary share of traffic, measured on its own
    canary_error_rate_pct: float | None = None
    logs: list[LogLine] = field(default_factory=list)
