"""Units are normalised in one place: Percent and fraction producers read alike downstream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.improvement.logic.guardrails import AutonomyGuardrails, violations
from agents.improvement.logic.verdicts import MetricWindow, calculate_degradation, summarize
from agents.improvement.metrics_tap import Sample
from streams.metric_codec import lean_from_model, lean_metric
from streams.records import MetricDataPoint
from streams.units import canonical, fraction, is_ratio_name

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("name", "value", "unit", "expected"), [
    ("ErrorRate", 0.2, "Percent", (0.2, "Percent")),      # CloudWatch Percent: kept
    ("ErrorRate", 0.002, "None", (0.2, "Percent")),       # a fraction: to percent
    ("error_rate", 1.0, "None", (100.0, "Percent")),
    ("ErrorRate", 7.25, "None", (7.25, "Percent")),       # > 1 cannot be a fraction: percent already
    ("CacheHitRatio", 0.9, "", (90.0, "Percent")),
    ("CPUUtilization", 55.0, "Percent", (55.0, "Percent")),
    ("Latency", 0.5, "Seconds", (0.5, "Seconds")),        # other units are left as sent
    ("RequestRate", 0.5, "None", (0.5, "None")),          # a rate per second is no ratio
    ("ErrorRate", 3.0, "Count", (3.0, "Count")),
])
def test_canonical(name: str, value: float, unit: str, expected: tuple[float, str]) -> None:
    got = canonical(name, value, unit)
    assert got[0] == pytest.approx(expected[0]) and got[1] == expected[1]
    assert canonical(name, *got) == got  # idempotent: a canonical point stays as it is


def test_ratio_names() -> None:
    assert all(is_ratio_name(n) for n in ("ErrorRate", "FaultRate", "SuccessRate", "5xxErrorRate",
                                           "ThrottleRate", "DiskUsedPercent", "CacheHitRate"))
    assert not any(is_ratio_name(n) for n in ("Latency", "RequestCount", "RequestRate", "Invocations"))
    assert fraction(0.2, "Percent") == pytest.approx(0.002) and fraction(0.5, "None") == 0.5


def _point(value: float, unit: str) -> dict[str, object]:
    return {"metric_name": "ErrorRate", "value": value, "unit": unit, "timestamp": 1_700_000_000,
            "tenant_id": "acme", "namespace": "Svc", "dimensions": {"service": "api"}}


def test_both_lean_paths_normalise_alike_and_keep_the_raw_event_id() -> None:
    for raw in (_point(0.002, "None"), _point(0.2, "Percent")):
        fast = lean_metric(raw)
        slow = lean_from_model(MetricDataPoint.model_validate(raw))
        assert fast == slow
        assert fast is not None and fast["value"] == pytest.approx(0.2) and fast["unit"] == "Percent"
    a, b = lean_metric(_point(0.002, "None")), lean_metric(_point(0.2, "Percent"))
    assert a is not None and b is not None and a["event_id"] != b["event_id"]  # ids of what was sent


def test_verdicts_and_guardrails_read_percent_and_fractions_alike() -> None:
    pct = [MetricDataPoint(metric_name="ErrorRate", value=0.2, unit="Percent", timestamp=NOW, tenant_id="a")] * 5
    frac = [MetricDataPoint(metric_name="ErrorRate", value=0.002, timestamp=NOW, tenant_id="a")] * 5
    tap = [Sample("ErrorRate", 0.2, None, "Percent")] * 5  # canonical samples of the metrics tap
    rates = {round(summarize(MetricWindow.from_points(pts))["error_rate"], 9) for pts in (pct, frac, tap)}
    assert rates == {0.002}
    # the case: 0.2 % is a success rate of 0.998 — inside the 0.95 floor, no violation
    success = 1.0 - summarize(MetricWindow.from_points(pct))["error_rate"]
    assert violations({"success_rate": success}, None, NOW, AutonomyGuardrails()) == []
    high = [MetricDataPoint(metric_name="ErrorRate", value=7.25, unit="Percent", timestamp=NOW, tenant_id="a")] * 5
    rate = summarize(MetricWindow.from_points(high))["error_rate"]
    assert rate == pytest.approx(0.0725)  # not -6.25 as a success rate
    assert calculate_degradation({"error_rate": 0.002}, {"error_rate": rate}) > 0.10
