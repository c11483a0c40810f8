"""Per-pattern tumbling-window counts per tenant and log group, and the error-pattern insights."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from agents.patterns.logic.templates import PatternMatch
from streams.records import LogEvent, TelemetryInsight

ERROR_LEVELS = frozenset({"ERROR", "CRITICAL", "FATAL", "SEVERE", "ALERT", "EMERGENCY"})
ENTRY_PREFIX = "p|"


def entry_key(tenant_id: str, log_group: str, pattern_id: str) -> str:
    """The key of a pattern's entry in one (tenant, log group): its state, its changelog key."""
    return f"{ENTRY_PREFIX}{tenant_id}|{log_group}|{pattern_id}"


def is_error(severity: str) -> bool:
    return severity.upper() in ERROR_LEVELS


@dataclass
class PatternEntry:
    """One pattern in one (tenant, log group): counts in the current window, first/last seen, a sample."""

    key: str
    pattern_id: str
    template: str
    tenant_id: str
    log_group: str
    category: str
    window_start: float
    count_window: int
    total: int
    first_seen: float
    last_seen: float
    sample: str
    severity: str
    recurring_window: float = -1.0  # window for which the recurring insight was already emitted

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PatternCounter:
    """Tumbling windows by log time (hour by default); recurring = count in the window > threshold."""

    def __init__(self, window_seconds: int, threshold: int) -> None:
        self.window = float(window_seconds)
        self.threshold = threshold
        self.entries: dict[str, PatternEntry] = {}
        self.per_tenant: Counter[str] = Counter()  # live entries of each tenant (the pattern cap counts them)
        self._expired: list[str] = []

    @classmethod
    def from_book(cls, book: dict[str, Any], window_seconds: int, threshold: int) -> PatternCounter:
        c = cls(window_seconds, threshold)
        for k, v in book.items():
            if k.startswith(ENTRY_PREFIX) and isinstance(v, dict):
                c.entries[k] = PatternEntry(**v)
                c.per_tenant[c.entries[k].tenant_id] += 1
        return c

    def observe(self, ev: LogEvent, match: PatternMatch, now: float) -> tuple[PatternEntry, list[str]]:
        """Count one line; returns its entry and the insight reasons it raises ("new", "recurring")."""
        ts = ev.timestamp.timestamp()
        win = ts - ts % self.window
        key = entry_key(ev.tenant_id, ev.log_group, match.pattern_id)
        e = self.entries.get(key)
        reasons: list[str] = []
        error = is_error(ev.severity)
        if e is None:
            e = PatternEntry(key=key, pattern_id=match.pattern_id, template=match.template, tenant_id=ev.tenant_id,
                             log_group=ev.log_group, category=match.category, window_start=win, count_window=0,
                             total=0, first_seen=ts, last_seen=ts, sample=ev.message[:500],
                             severity=ev.severity.upper())
            self.entries[key] = e
            self.per_tenant[ev.tenant_id] += 1
            if error:
                reasons.append("new")
        if win > e.window_start:
            e.window_start, e.count_window = win, 0
        if win == e.window_start:
            e.count_window += 1
        e.total += 1
        e.template = match.template  # templates generalise as the miner learns
        e.first_seen = min(e.first_seen, ts)
        e.last_seen = max(e.last_seen, ts)
        if error:
            e.severity = ev.severity.upper()
            e.sample = ev.message[:500]
        if error and e.count_window > self.threshold and e.recurring_window != e.window_start:
            e.recurring_window = e.window_start
            reasons.append("recurring")
        self._expire(now)
        return e, reasons

    def _expire(self, now: float) -> None:
        """Forget patterns not seen for two windows (bounded state); reported once via expired_keys()."""
        horizon = now - 2 * self.window
        if len(self.entries) < 10_000:
            return
        for k in [k for k, e in self.entries.items() if e.last_seen < horizon]:
            gone = self.entries.pop(k)
            self.per_tenant[gone.tenant_id] -= 1
            if self.per_tenant[gone.tenant_id] <= 0:
                del self.per_tenant[gone.tenant_id]
            self._expired.append(k)

    def expired_keys(self) -> list[str]:
        out, self._expired = self._expired, []
        return out


def _severity(entry: PatternEntry, reason: str) -> str:
    if reason == "new":
        return "medium" if entry.severity == "ERROR" else "high"
    if entry.count_window > 200:
        return "critical"
    if entry.count_window > 50:
        return "high"
    return "medium"


def pattern_insight(ev: LogEvent, match: PatternMatch, entry: PatternEntry, reason: str,
                    now: float, window_seconds: float = 3600.0) -> TelemetryInsight:
    """An `error_pattern` insight: a recurring pattern (> threshold per window) or a new error pattern.

    occurrences_per_hour is the window's count scaled to an hour (the hourly count for the default
    one-hour window): it never extrapolates from the few seconds since the window opened, so the rate
    only grows while a window fills (a first line reports 1/hour, not 3600/hour one second in).
    """
    per_hour = entry.count_window * 3600.0 / max(1.0, window_seconds)
    what = "recurring" if reason == "recurring" else "new"
    return TelemetryInsight(
        insight_type="error_pattern", severity=_severity(entry, reason),  # type: ignore[arg-type]
        affected_component=ev.component(), affected_tenants=[ev.tenant_id], tenant_id=ev.tenant_id,
        source="patterns", problem_type="error_pattern",
        confidence_score=0.85 if reason == "recurring" else 0.6,
        metrics={"count_window": float(entry.count_window), "total": float(entry.total),
                 "occurrences_per_hour": round(per_hour, 3)},
        description=f"{what} error pattern in {ev.log_group} ({entry.count_window} in the window): {entry.template}",
        recommended_action=f"fix the cause of '{match.category}' errors in {ev.component()}",
        timestamp=datetime.fromtimestamp(ev.timestamp.timestamp(), UTC),
        evidence={"reason": reason, "pattern_id": match.pattern_id, "template": entry.template,
                  "category": match.category, "log_group": ev.log_group, "window_start": entry.window_start,
                  "count_window": entry.count_window, "window_seconds": window_seconds, "sample": entry.sample,
                  "detected_at": now},
    )
