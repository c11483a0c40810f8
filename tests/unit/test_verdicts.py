"""Verdicts: the degradation formula, judge decisions, impact assessment and cycle reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agents.improvement.logic.verdicts import (
    MetricWindow,
    assess_impact,
    baseline_from,
    build_cycle_report,
    calculate_degradation,
    judge,
    percentile,
)
from streams.records import ImprovementExecution, ImprovementOpportunity, MetricDataPoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = {"latency_p95": 100.0, "error_rate": 0.02, "throughput": 1000.0}


def test_degradation_formula_matches_seed() -> None:
    assert calculate_degradation(BASE, BASE) == 0.0
    assert calculate_degradation(BASE, {**BASE, "latency_p95": 125.0}) == pytest.approx(0.25)
    assert calculate_degradation(BASE, {**BASE, "error_rate": 0.03}) == pytest.approx(0.5)
    # error rate uses max(baseline, 0.01): from 0 to 0.005 is 50 %
    assert calculate_degradation({**BASE, "error_rate": 0.0}, {**BASE, "error_rate": 0.005}) == pytest.approx(0.5)
    assert calculate_degradation(BASE, {**BASE, "throughput": 600.0}) == pytest.approx(0.4)
    # the max of the degradations; improvements do not offset
    cur = {"latency_p95": 50.0, "error_rate": 0.021, "throughput": 900.0}
    assert calculate_degradation(BASE, cur) == pytest.approx(0.1)


def test_percentiles_and_baseline() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 95) == pytest.approx(95.05)
    b = baseline_from(MetricWindow(latency=xs, error_rate=[0.01, 0.03], throughput=[10, 20]))
    assert b["latency_p99"] == pytest.approx(99.01) and b["error_rate"] == 0.02 and b["throughput"] == 15


def test_window_from_points_maps_metric_names() -> None:
    pts = [MetricDataPoint(metric_name=n, value=v, timestamp=T0, tenant_id="t")
           for n, v in [("ResponseLatency", 10), ("ErrorRate", 0.1), ("RequestCount", 5), ("CPUUtilization", 9)]]
    w = MetricWindow.from_points(pts)
    assert (w.latency, w.error_rate, w.throughput) == ([10], [0.1], [5])


def _window(lat: list[float]) -> MetricWindow:
    return MetricWindow(latency=lat, error_rate=[0.02] * len(lat), throughput=[1000.0] * len(lat))


def test_judge_rollback_on_persistent_degradation() -> None:
    v = judge(BASE, _window([130.0] * 10), threshold=0.10, min_samples=5)
    assert v.decision == "rollback" and v.degradation == pytest.approx(0.3)


def test_judge_thin_data_is_not_a_guess() -> None:
    assert judge(BASE, _window([300.0] * 3), min_samples=5).decision == "continue"
    assert judge(BASE, _window([300.0] * 3), min_samples=5, final=True).decision == "inconclusive"


def test_judge_single_early_spike_is_noise() -> None:
    lat = [100.0] * 3 + [400.0] * 2 + [100.0] * 5  # spike in the older half only
    v = judge(BASE, _window(lat), min_samples=5)
    assert v.decision == "continue" and "noisy" in v.reason
    assert judge(BASE, _window(lat), min_samples=5, final=True).decision == "inconclusive"


def test_judge_keep_when_final_and_healthy() -> None:
    assert judge(BASE, _window([95.0] * 10), final=True).decision == "keep"
    assert judge(BASE, _window([95.0] * 10)).decision == "continue"
    assert judge(BASE, _window([109.0] * 10), threshold=0.10, final=True).decision == "keep"


def test_impact_assessment_and_cycle_report() -> None:
    final = {"latency_p95": 70.0, "error_rate": 0.01, "throughput": 1100.0}
    a = assess_impact("imp-1", False, BASE, final, 12.5, llm_tokens=300, llm_cost_usd=0.01)
    imp = a["metrics"]["improvement"]
    assert a["status"] == "completed" and imp["latency_reduction_ms"] == 30 and imp["latency_reduction_pct"] == 30
    assert imp["throughput_change"] == 100 and a["cost"]["llm_tokens"] == 300
    opp = ImprovementOpportunity(opportunity_id="o", title="t", description="d", tenant_id="t", problem_type="latency",
                                 impact_score=7200, first_seen=T0, last_seen=T0)
    exs = [ImprovementExecution(improvement_id="a", status="completed", opportunity=opp),
           ImprovementExecution(improvement_id="b", status="rolled_back", opportunity=opp),
           ImprovementExecution(improvement_id="c", status="failed")]
    r = build_cycle_report("c1", "manual", T0, T0 + timedelta(seconds=90), exs, opportunities_identified=4,
                           assessments=[a])
    assert (r.improvements_attempted, r.improvements_deployed, r.improvements_rolled_back) == (3, 1, 1)
    assert r.total_impact == 7200 and r.duration_seconds == 90 and r.improvements == [a]


def test_judge_never_keeps_on_samples_the_baseline_cannot_be_compared_with() -> None:
    # the baseline has latency only; the window has plenty of throughput samples but no latency: no evidence
    baseline = {"samples": 30.0, "latency_p95": 100.0}
    thin = MetricWindow(latency=[], error_rate=[], throughput=[1000.0] * 10)
    assert judge(baseline, thin, min_samples=3, final=True).decision == "inconclusive"
    assert judge(baseline, thin, min_samples=3).decision == "continue"
    assert judge(baseline, MetricWindow(latency=[150.0] * 2, throughput=[1000.0] * 10), min_samples=3,
                 final=True).decision == "inconclusive"
    assert judge(baseline, MetricWindow(latency=[95.0] * 3), min_samples=3, final=True).decision == "keep"
