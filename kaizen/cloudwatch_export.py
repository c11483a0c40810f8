"""The CloudWatch dashboard and alarm definitions of kaizen's own metrics, as CloudWatch JSON."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings

NAMESPACE = "SelfBuilding"


def _widget(title: str, metrics: list[list[str]], stat: str, period: int, y: int) -> dict[str, Any]:
    return {
        "type": "metric", "x": 0 if y % 2 == 0 else 12, "y": (y // 2) * 6, "width": 12, "height": 6,
        "properties": {"title": title, "metrics": metrics, "stat": stat, "period": period, "view": "timeSeries"},
    }


def export_definitions(settings: Settings) -> dict[str, Any]:
    """Dashboard body (PutDashboard) and alarms (PutMetricAlarm kwargs) (docs/observability.md): success rate, cycle duration, impact trend, generation latency,
    telemetry throughput, circuit breaker state, evolution level; alarms for failure rate,
    rollback rate, long cycles, breaker open > 5 min, generation > 60 s."""
    region = settings.aws_region
    widgets = [
        _widget("Improvement Success Rate", [[NAMESPACE, "improvements_deployed"], [".", "improvements_rolled_back"]],
                "Sum", 3600, 0),
        _widget("Cycle Duration", [[NAMESPACE, "cycle_duration_seconds"]], "Average", 3600, 1),
        _widget("Impact Score Trend", [[NAMESPACE, "impact_score_total"]], "Sum", 86400, 2),
        _widget("Code Generation Latency", [[NAMESPACE, "code_generation_duration_ms"]], "p95", 300, 3),
        _widget("Telemetry Processing Throughput", [[NAMESPACE, "telemetry_events_processed"],
                                                   [".", "insights_generated"]], "Sum", 60, 4),
        _widget("Circuit Breaker State", [[NAMESPACE, "circuit_breaker_opens"]], "Sum", 300, 5),
        _widget("Evolution Level", [[NAMESPACE, "evolution_level"]], "Maximum", 3600, 6),
    ]
    for w in widgets:
        w["properties"]["region"] = region
    alarms = [
        _alarm("SelfBuilding-HighFailureRate", "improvement_cycles_failed", 3, 3600),
        _alarm("SelfBuilding-HighRollbackRate", "improvements_rolled_back", 2, 3600),
        _alarm("SelfBuilding-LongCycleDuration", "cycle_duration_seconds", 300, 300, stat="Average"),
        _alarm("SelfBuilding-LowSuccessRate", "improvement_success_rate", 0.7, 3600, stat="Average",
               comparison="LessThanThreshold"),
        _alarm("SelfBuilding-CircuitBreakerOpen", "circuit_breaker_open", 0, 300, stat="Minimum",
               evaluation_periods=1),
        _alarm("SelfBuilding-AnyRollback", "improvements_rolled_back", 0, 300),
        _alarm("SelfBuilding-GenerationTimeout", "code_generation_duration_ms", 60000, 300, stat="Maximum"),
    ]
    return {
        "dashboard": {"DashboardName": "SelfBuilding-ImprovementCycle", "DashboardBody": {"widgets": widgets}},
        "alarms": alarms,
    }


def _alarm(name: str, metric: str, threshold: float, period: int, *, stat: str = "Sum",
           comparison: str = "GreaterThanThreshold", evaluation_periods: int = 1) -> dict[str, Any]:
    return {
        "AlarmName": name, "Namespace": NAMESPACE, "MetricName": metric, "Statistic": stat,
        "Period": period, "EvaluationPeriods": evaluation_periods, "Threshold": threshold,
        "ComparisonOperator": comparison, "TreatMissingData": "notBreaching",
    }
