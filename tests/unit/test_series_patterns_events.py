"""Unit tests of series insights, error-pattern windows and event insights (pure logic)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from agents.events.logic.events import alarm_insight, event_component, lambda_insight
from agents.patterns.logic.patterns import PatternCounter, is_error, pattern_insight
from agents.patterns.logic.templates import PatternMatch
from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, DEFAULT_PARAMS
from agents.scoring.logic.series import RECENT, SeriesModel, anomaly_insight, trend_insight
from agents.scoring.logic.trends import TrendFinding
from streams.metric_codec import lean_from_model
from streams.records import CloudWatchEvent, LogEvent, MetricDataPoint

T0 = 1_800_000_000.0


def _point(value: float, ts: float, name: str = "Latency") -> MetricDataPoint:
    return MetricDataPoint(metric_name=name, value=value, unit="Milliseconds", timestamp=datetime.fromtimestamp(ts, UTC),
                           tenant_id="acme", namespace="App", dimensions={"service": "checkout"})


def _steady(model: SeriesModel, n: int, seed: int = 1) -> list[float]:
    rnd = random.Random(seed)
    return [model.observe(T0 + i * 60, 100.0 + rnd.gauss(0, 3))[0] for i in range(n)]


# --- series -----------------------------------------------------------------------------------------


def test_series_warm_up_then_level_shift_scores_high() -> None:
    m = SeriesModel.new("Latency")
    scores = _steady(m, 300)
    warm = DEFAULT_PARAMS.warmup
    assert scores[:warm] == [0.0] * warm, "the detector's warm-up scores 0"
    assert max(scores) < ANOMALY_THRESHOLD
    score, _ = m.observe(T0 + 300 * 60, 200.0)
    assert score >= ANOMALY_THRESHOLD and m.last_score == score


def test_series_keeps_recent_points_bounded_and_summarises() -> None:
    m = SeriesModel.new("Latency")
    _steady(m, RECENT + 25)
    summary = m.summary("k", lean_from_model(_point(100.0, T0)))
    assert len(summary["points"]) == RECENT
    assert summary["points"][-1][0] == T0 + (RECENT + 24) * 60
    assert summary["component"] == "checkout" and summary["tenant_id"] == "acme"


def test_series_checkpoint_restores_the_same_model() -> None:
    m = SeriesModel.new("Latency")
    _steady(m, 200)
    assert m.due_checkpoint(0.0, 50, 30.0)
    data = m.checkpoint(now=10.0)
    assert not m.due_checkpoint(20.0, 50, 30.0) and m.since_cp == 0
    r = SeriesModel.restore("Latency", data)
    rnd = random.Random(9)
    for i in range(200, 260):
        v = 100.0 + rnd.gauss(0, 3) + (120.0 if i == 250 else 0.0)
        assert m.observe(T0 + i * 60, v) == r.observe(T0 + i * 60, v)
    m.observe(T0 + 261 * 60, 100.0)
    assert m.due_checkpoint(10.0 + 30.0, 50, 30.0), "due by time with at least one new point"


def test_anomaly_insight_fields() -> None:
    m = SeriesModel.new("Latency")
    _steady(m, 300)
    p = _point(200.0, T0 + 300 * 60)
    score, _ = m.observe(p.timestamp.timestamp(), p.value)
    ins = anomaly_insight(p, score, m, now=T0 + 99999)
    assert ins.insight_type == "anomaly" and ins.source == "scoring" and ins.problem_type == "latency"
    assert ins.severity == "critical" and ins.affected_component == "checkout" and ins.tenant_id == "acme"
    assert 90.0 < ins.metrics["baseline"] < 110.0 and 80.0 < ins.metrics["change_pct"] < 120.0
    assert ins.evidence["series"] == p.series_key() and ins.evidence["detected_at"] == T0 + 99999
    assert ins.timestamp == p.timestamp, "insight time is the point's event time, not the detection time"


def test_trend_insight_maps_rules_to_problems() -> None:
    m = SeriesModel.new("Requests")
    f = TrendFinding(rule="throughput_drop", severity="high", baseline=100.0, current=60.0, change_pct=-40.0)
    ins = trend_insight(_point(60.0, T0, "Requests"), f, m, now=T0)
    assert ins.insight_type == "performance_degradation" and ins.source == "trends"
    assert ins.problem_type == "throughput" and ins.severity == "high"
    assert ins.metrics == {"baseline": 100.0, "current": 60.0, "change_pct": -40.0, "value": 60.0}
    assert "-40.0 %" in ins.description and ins.evidence["rule"] == "throughput_drop"


# --- patterns ---------------------------------------------------------------------------------------


def _log(ts: float, severity: str = "ERROR", group: str = "/aws/lambda/orders", tenant: str = "acme") -> LogEvent:
    return LogEvent(log_group=group, message=f"timed out after {ts:.0f} ms", timestamp=datetime.fromtimestamp(ts, UTC),
                    tenant_id=tenant, severity=severity)


MATCH = PatternMatch(pattern_id="p1", template="timed out after <NUM> ms", is_new=False, category="timeout")
HOUR = 1_800_000_000.0 - 1_800_000_000.0 % 3600


def test_new_error_pattern_reported_once_info_never() -> None:
    c = PatternCounter(3600, 10)
    _, r1 = c.observe(_log(HOUR + 1), MATCH, now=HOUR + 1)
    _, r2 = c.observe(_log(HOUR + 2), MATCH, now=HOUR + 2)
    assert r1 == ["new"] and r2 == []
    _, r3 = c.observe(_log(HOUR + 3, "INFO", group="/aws/lambda/other"), MATCH, now=HOUR + 3)
    assert r3 == [], "a non-error line is counted but raises nothing"
    assert is_error("error") and is_error("FATAL") and not is_error("WARN")


def test_recurring_once_per_window_and_again_in_the_next_window() -> None:
    c = PatternCounter(3600, 10)
    reasons = [c.observe(_log(HOUR + i * 60), MATCH, now=HOUR + i * 60)[1] for i in range(15)]
    assert [i for i, r in enumerate(reasons) if "recurring" in r] == [10], "the 11th line (> 10) fires, once"
    entry, _ = c.observe(_log(HOUR + 3599), MATCH, now=HOUR + 3599)
    assert entry.count_window == 16 and entry.total == 16
    # Next hour: the window count restarts; the pattern recurs again after 11 more.
    nxt = [c.observe(_log(HOUR + 3600 + i), MATCH, now=HOUR + 3600 + i)[1] for i in range(11)]
    assert nxt[-1] == ["recurring"] and not any(nxt[:-1])
    entry = c.entries[next(iter(c.entries))]
    assert entry.count_window == 11 and entry.total == 27 and entry.window_start == HOUR + 3600


def test_late_line_of_an_older_window_counts_in_total_only() -> None:
    c = PatternCounter(3600, 10)
    c.observe(_log(HOUR + 3700), MATCH, now=HOUR + 3700)
    entry, reasons = c.observe(_log(HOUR + 10), MATCH, now=HOUR + 3701)
    assert entry.count_window == 1 and entry.total == 2 and reasons == []
    assert entry.first_seen == HOUR + 10 and entry.last_seen == HOUR + 3700


def test_counts_are_per_tenant_and_log_group() -> None:
    c = PatternCounter(3600, 10)
    for tenant in ("a", "b"):
        for group in ("/g/1", "/g/2"):
            c.observe(_log(HOUR, group=group, tenant=tenant), MATCH, now=HOUR)
    assert len(c.entries) == 4 and all(e.count_window == 1 for e in c.entries.values())


def test_counter_rebuilt_from_its_book() -> None:
    c = PatternCounter(3600, 10)
    for i in range(11):
        c.observe(_log(HOUR + i), MATCH, now=HOUR + i)
    book: dict[str, Any] = {k: e.to_json() for k, e in c.entries.items()}
    book["__miner__"] = "ignored"
    r = PatternCounter.from_book(book, 3600, 10)
    assert r.entries == c.entries
    _, reasons = r.observe(_log(HOUR + 20), MATCH, now=HOUR + 20)
    assert reasons == [], "the recurring insight of this window was already emitted before the restart"


def test_pattern_insight_rate_and_evidence() -> None:
    c = PatternCounter(3600, 10)
    first, _ = c.observe(_log(HOUR + 1), MATCH, now=HOUR + 1)
    ins = pattern_insight(_log(HOUR + 1), MATCH, first, "new", now=HOUR + 1)
    assert ins.metrics["occurrences_per_hour"] == 1.0, "one line a second into the hour is 1/hour, not 3600/hour"
    assert ins.severity == "medium" and ins.confidence_score == 0.6
    for i in range(2, 12):
        entry, _ = c.observe(_log(HOUR + i * 60), MATCH, now=HOUR + i * 60)
    ins = pattern_insight(_log(HOUR + 660), MATCH, entry, "recurring", now=HOUR + 660)
    assert ins.insight_type == "error_pattern" and ins.problem_type == "error_pattern"
    assert ins.metrics["count_window"] == 11.0 and ins.metrics["occurrences_per_hour"] == 11.0
    assert ins.affected_component == "orders" and ins.evidence["category"] == "timeout"
    assert ins.evidence["reason"] == "recurring" and ins.evidence["pattern_id"] == "p1"
    assert ins.evidence["window_seconds"] == 3600.0
    half = pattern_insight(_log(HOUR + 660), MATCH, entry, "recurring", now=HOUR + 660, window_seconds=1800.0)
    assert half.metrics["occurrences_per_hour"] == 22.0


# --- events -----------------------------------------------------------------------------------------


def _event(kind: str, **detail: Any) -> CloudWatchEvent:
    return CloudWatchEvent(event_type=kind, source="aws.cloudwatch", detail=detail,  # type: ignore[arg-type]
                           timestamp=datetime.fromtimestamp(T0, UTC), tenant_id="acme")


def test_alarm_insight_only_for_alarm_transitions() -> None:
    ev = _event("alarm", alarm_name="HighLatency", old_state="OK", new_state="ALARM", metric_name="Latency",
                threshold=500, dimensions={"service": "checkout"}, reason="p99 above 500")
    ins = alarm_insight(ev)
    assert ins is not None
    assert ins.insight_type == "alarm" and ins.severity == "high" and ins.problem_type == "latency"
    assert ins.affected_component == "checkout" and ins.metrics == {"threshold": 500.0}
    assert ins.evidence["alarm_name"] == "HighLatency" and ins.evidence["event_id"] == ev.event_id
    assert ins.recommended_action == "investigate"
    assert alarm_insight(_event("alarm", alarm_name="HighLatency", new_state="OK")) is None
    assert alarm_insight(_event("alarm", alarm_name="x", new_state="INSUFFICIENT_DATA")) is None


def test_alarm_severity_and_fallbacks() -> None:
    crit = alarm_insight(_event("alarm", alarm_name="Down", new_state="alarm", severity="CRITICAL"))
    assert crit is not None and crit.severity == "critical"
    assert crit.recommended_action == "start an emergency improvement cycle"
    assert crit.affected_component == "Down", "no dimension: the alarm name is the component"
    assert crit.problem_type == "alarm" and crit.metrics == {}
    odd = alarm_insight(_event("alarm", alarm_name="x", new_state="ALARM", severity="urgent", threshold="high"))
    assert odd is not None and odd.severity == "high" and odd.metrics == {}


def test_event_component_prefers_dimensions_then_detail() -> None:
    assert event_component({"dimensions": {"FunctionName": "fn"}}, "fb") == "fn"
    assert event_component({"function": "f2"}, "fb") == "f2"
    assert event_component({"dimensions": {"service": "svc"}, "function": "f2"}, "fb") == "svc"
    assert event_component({}, "fb") == "fb"


def test_lambda_insights() -> None:
    ok = _event("lambda_completion", function="orders", status="Success", duration_ms=1200)
    assert lambda_insight(ok) is None
    failed = lambda_insight(_event("lambda_completion", function="orders", status="Failure", duration_ms=300))
    assert failed is not None and failed.problem_type == "error_rate" and failed.insight_type == "error_pattern"
    assert failed.severity == "high" and failed.affected_component == "orders"
    assert failed.evidence["category"] == "lambda_failure" and failed.metrics == {"duration_ms": 300.0}
    timeout = lambda_insight(_event("lambda_completion", function="orders", status="Timeout"))
    assert timeout is not None and timeout.problem_type == "latency"
    assert timeout.insight_type == "performance_degradation" and timeout.evidence["category"] == "timeout"
    slow = lambda_insight(_event("lambda_completion", function="orders", status="Success", durationMs=61_000))
    assert slow is not None and slow.severity == "medium" and slow.problem_type == "latency"
    assert "61000 ms" in slow.description
    errs = lambda_insight(_event("lambda_completion", function="orders", errors=["boom"]))
    assert errs is not None and errs.problem_type == "error_rate"
