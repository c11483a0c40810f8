"""CloudWatch events → insights: alarm transitions and Lambda completions (pure)."""

from __future__ import annotations

from typing import Any

from agents.scoring.logic.trends import classify_metric
from streams.records import CloudWatchEvent, TelemetryInsight

_SEVERITIES = {"low", "medium", "high", "critical"}


def event_component(detail: dict[str, Any], fallback: str) -> str:
    dims = detail.get("dimensions") or {}
    for key in ("service", "component", "ServiceName", "FunctionName", "function"):
        if isinstance(dims, dict) and dims.get(key):
            return str(dims[key])
        if detail.get(key):
            return str(detail[key])
    return fallback


def alarm_insight(ev: CloudWatchEvent) -> TelemetryInsight | None:
    """An ALARM transition as an `alarm` insight (None for transitions to OK/INSUFFICIENT_DATA)."""
    d = ev.detail
    if str(d.get("new_state", "")).upper() != "ALARM":
        return None
    name = str(d.get("alarm_name", "alarm"))
    severity = str(d.get("severity", "high")).lower()
    severity = severity if severity in _SEVERITIES else "high"
    metric = d.get("metric_name")
    kind = classify_metric(str(metric)) if metric else "other"
    return TelemetryInsight(
        insight_type="alarm", severity=severity,  # type: ignore[arg-type]
        affected_component=event_component(d, name), affected_tenants=[ev.tenant_id], tenant_id=ev.tenant_id,
        source="events", metric_name=str(metric) if metric else None,
        problem_type=kind if kind != "other" else "alarm", confidence_score=0.9,
        metrics={"threshold": float(d["threshold"])} if isinstance(d.get("threshold"), int | float) else {},
        description=f"alarm {name} went {d.get('old_state', '?')} → ALARM: {d.get('reason', '')}"[:500],
        recommended_action="start an emergency improvement cycle" if severity == "critical" else "investigate",
        timestamp=ev.timestamp, evidence={"alarm_name": name, "event_id": ev.event_id, **{
            k: d[k] for k in ("old_state", "new_state", "namespace", "dimensions") if k in d}},
    )


def lambda_insight(ev: CloudWatchEvent, slow_ms: float = 60_000.0) -> TelemetryInsight | None:
    """A failed, timed-out or slow Lambda completion as an insight (success within limits: None)."""
    d = ev.detail
    status = str(d.get("status") or d.get("condition") or "").lower()
    duration = d.get("duration_ms") or d.get("durationMs")
    failed = status in {"failure", "failed", "error", "timeout", "retriesexhausted"} or bool(d.get("errors"))
    slow = isinstance(duration, int | float) and duration >= slow_ms
    if not failed and not slow:
        return None
    timeout = "timeout" in status or "timed out" in str(d.get("error", "")).lower()
    problem = "latency" if (slow or timeout) else "error_rate"
    fn = event_component(d, ev.source)
    return TelemetryInsight(
        insight_type="performance_degradation" if problem == "latency" else "error_pattern",
        severity="high" if failed else "medium", affected_component=fn, affected_tenants=[ev.tenant_id],
        tenant_id=ev.tenant_id, source="events", problem_type=problem, confidence_score=0.75,
        metrics={"duration_ms": float(duration)} if isinstance(duration, int | float) else {},
        description=f"Lambda {fn} completion: {status or 'slow'}"
                    + (f" after {duration} ms" if isinstance(duration, int | float) else ""),
        recommended_action="raise timeout / fix the failing dependency", timestamp=ev.timestamp,
        evidence={"event_id": ev.event_id, "category": "timeout" if timeout else "lambda_failure",
                  "memory_used_mb": d.get("memory_used_mb")},
    )
