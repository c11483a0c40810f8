"""Unit tests of the default trend rules."""

from __future__ import annotations

import random

import pytest

from agents.scoring.logic.trends import (
    TrendParams,
    TrendTracker,
    any_rule_holds,
    classify_metric,
    error_unit_for,
    evaluate_trend,
    is_degraded,
    rules_from_stats,
)


@pytest.mark.parametrize(("name", "kind"), [
    ("Latency", "latency"), ("Duration", "latency"), ("TargetResponseTime", "latency"), ("p95", "latency"),
    ("Errors", "error_rate"), ("ErrorRate", "error_rate"), ("5XXError", "error_rate"),
    ("HTTPCode_Target_5XX_Count", "error_rate"),
    ("CPUUtilization", "utilization"), ("MemoryUtilization", "utilization"),
    ("RequestCount", "throughput"), ("Invocations", "throughput"), ("Throughput", "throughput"),
    ("FreeableMemory", "other"), ("CPUCreditBalance", "other"), ("SomethingElse", "other"),
])
def test_classify_metric(name: str, kind: str) -> None:
    assert classify_metric(name) == kind


def test_error_unit() -> None:
    assert error_unit_for("ErrorRate") == "percent"
    assert error_unit_for("5XXError") == "count"


def _rules(base: list[float], cur: list[float], kind: str, unit: str = "percent") -> set[str]:
    return {f.rule for f in evaluate_trend(base, cur, kind, error_unit=unit)}  # type: ignore[arg-type]


FLAT = [100.0] * 60


def test_latency_rule_threshold() -> None:
    assert "latency_increase" in _rules(FLAT, [121.0] * 10, "latency")
    assert "latency_increase" not in _rules(FLAT, [119.0] * 10, "latency")


def test_error_rate_rule_in_points_and_relative() -> None:
    assert "error_rate_increase" in _rules([1.0] * 60, [6.5] * 10, "error_rate")        # +5.5 points
    assert "error_rate_increase" not in _rules([1.0] * 60, [5.5] * 10, "error_rate")    # +4.5 points
    assert "error_rate_increase" in _rules([0.01] * 60, [0.07] * 10, "error_rate", "ratio")
    assert "error_rate_increase" in _rules(FLAT, [106.0] * 10, "error_rate", "count")   # +6 %
    assert "error_rate_increase" not in _rules(FLAT, [104.0] * 10, "error_rate", "count")


def test_utilization_rule() -> None:
    assert "high_utilization" in _rules([50.0] * 60, [81.0] * 10, "utilization")
    assert "high_utilization" not in _rules([50.0] * 60, [79.0] * 10, "utilization")


def test_throughput_drop_rule() -> None:
    assert "throughput_drop" in _rules(FLAT, [69.0] * 10, "throughput")
    assert "throughput_drop" not in _rules(FLAT, [71.0] * 10, "throughput")
    assert "throughput_drop" not in _rules(FLAT, [150.0] * 10, "throughput")


def test_std_rule_direction_and_threshold() -> None:
    rng = random.Random(3)
    base = [rng.gauss(100.0, 2.0) for _ in range(200)]
    assert is_degraded(base, [106.0] * 10)
    assert not is_degraded(base, [102.0] * 10)
    assert not is_degraded(base, [90.0] * 10)
    assert is_degraded(base, [90.0] * 10, higher_is_worse=False)
    assert "std_degradation" in _rules(base, [106.0] * 10, "other")
    assert "std_degradation" in _rules(base, [90.0] * 10, "throughput")


def test_tracker_reports_one_insight_per_incident_after_it_persisted() -> None:
    p = TrendParams(baseline_size=30, current_size=5, min_baseline=20, persist=6, clear=10)
    t = TrendTracker("latency", p)
    assert [f for i in range(40) for f in t.observe(float(i), 100.0)] == []
    # a blip of four points: the recent mean is past +20 % for four points, not `persist` (6): no insight
    assert [f for i in range(4) for f in t.observe(40.0 + i, 150.0)] == []
    assert [f for i in range(26) for f in t.observe(44.0 + i, 100.0)] == []
    # a lasting rise: one insight (the specific rule, not also the 2-sigma one) once the rules held for
    # 6 points (the recent mean crosses +20 % at the rise's 3rd point, so at its 8th)
    found = [(i, f) for i in range(30) for f in t.observe(70.0 + i, 150.0)]
    assert [(i, f.rule) for i, f in found] == [(7, "latency_increase")]
    assert found[0][1].baseline < 110.0 and found[0][1].change_pct > 20.0   # the rise is still mostly recent
    # it lasts, is absorbed, returns to normal: nothing more; after `clear` calm points a new incident fires
    assert [f for i in range(60) for f in t.observe(100.0 + i, 100.0)] == []
    found = [f for i in range(10) for f in t.observe(200.0 + i, 200.0)]
    assert [f.rule for f in found] == ["latency_increase"]


def test_tracker_needs_the_incident_to_be_unusual_for_the_series() -> None:
    p = TrendParams(baseline_size=30, current_size=5, min_baseline=20, persist=3, clear=10, unusual=0.7)
    t = TrendTracker("latency", p)
    for i in range(40):
        t.observe(float(i), 100.0, 0.0)
    # the rule holds but the detector says this is usual for the series (e.g. every evening): no insight
    assert [f for i in range(10) for f in t.observe(40.0 + i, 150.0, 0.2)] == []
    t2 = TrendTracker("latency", p)
    for i in range(40):
        t2.observe(float(i), 100.0, 0.0)
    got = [f.rule for i in range(10) for f in t2.observe(40.0 + i, 150.0, 0.9 if i == 4 else 0.1)]
    assert got == ["latency_increase"]


def test_tracker_state_round_trip() -> None:
    rng = random.Random(5)
    a = TrendTracker.for_metric("CPUUtilization")
    for i in range(100):
        a.observe(float(i), rng.uniform(40.0, 60.0))
    b = TrendTracker.from_state(a.to_state(), a.kind, a.p, a.error_unit)
    tail = [rng.uniform(70.0, 95.0) for _ in range(50)]
    assert [a.observe(0.0, v) for v in tail] == [b.observe(0.0, v) for v in tail]
    assert a.to_state() == b.to_state()


def test_tracker_restored_while_a_condition_holds_reports_as_if_never_stopped() -> None:
    """A checkpoint taken mid-condition carries what the detector said of it so far (the peak likelihood):
    the restored tracker reports exactly what the uninterrupted one does from there on."""
    p = TrendParams(baseline_size=40, current_size=8, min_baseline=20)
    points = [(100.0 + i % 3, 0.0) for i in range(40)] + [(150.0, 0.9 if i == 0 else 0.1) for i in range(40)]
    for cut in range(41, 56):
        a = TrendTracker("latency", p)
        after_cut_a: list[str] = []
        for i, (v, s) in enumerate(points[:cut]):
            a.observe(float(i), v, s)
        b = TrendTracker.from_state(a.to_state(), a.kind, a.p, a.error_unit)
        after_cut_b: list[str] = []
        for i, (v, s) in enumerate(points[cut:], start=cut):
            after_cut_a += [f.rule for f in a.observe(float(i), v, s)]
            after_cut_b += [f.rule for f in b.observe(float(i), v, s)]
        assert after_cut_b == after_cut_a, cut
        assert a.to_state() == b.to_state()


def test_tracker_matches_pure_rules_on_its_windows() -> None:
    rng = random.Random(8)
    p = TrendParams(baseline_size=40, current_size=8, min_baseline=20)
    t = TrendTracker("latency", p)
    for i in range(2000):
        level = 100.0 if (i // 150) % 2 == 0 else 135.0
        v = rng.gauss(level, 4.0) * (1e6 if i > 1500 else 1.0)   # a scale jump tests cancellation
        got = {f.rule for f in t.observe(float(i), v)}
        base, cur = t.windows()
        if len(base) >= p.min_baseline:
            want = {f.rule for f in evaluate_trend(base, cur, "latency", p)}
            # the tracker reports rising edges only, so what it reports must hold on the pure rules
            assert got <= want, i


def test_quick_quiet_test_agrees_with_the_rules() -> None:
    rng = random.Random(7)
    kinds = ["latency", "error_rate", "utilization", "throughput", "other"]
    holds = 0
    for _ in range(20_000):
        bm = rng.choice([0.0, rng.uniform(-5, 200)])
        bs = rng.choice([0.0, rng.uniform(0, 30)])
        cm = bm + rng.uniform(-100, 100) * rng.choice([0.01, 0.3, 1.0])
        kind = rng.choice(kinds)
        unit = rng.choice(["percent", "ratio", "count"])
        want = bool(rules_from_stats(bm, bs, cm, kind, None, unit))  # type: ignore[arg-type]
        assert any_rule_holds(bm, bs, cm, kind, None, unit) == want, (bm, bs, cm, kind, unit)  # type: ignore[arg-type]
        holds += want
    assert 1_000 < holds < 19_000  # both outcomes were exercised


def test_tracker_reports_a_steady_climb_that_the_rolling_baseline_follows() -> None:
    """A leak: +0.2 ms a second on 50 ms. The recent mean stays within 20 % (and mostly 2 sigma) of a
    baseline that climbs along, and a detector learns each step as usual (likelihood 0): the drift rule
    reports it once, while a flat series and a step the detector calls usual give nothing."""
    import random
    rng = random.Random(5)
    t = TrendTracker("latency", TrendParams())
    for i in range(170):
        assert t.observe(float(i), 50.0 * (1 + rng.gauss(0, 0.03)), 0.0) == []
    found = [(i, f) for i in range(240)
             for f in t.observe(170.0 + i, (50.0 + 0.2 * i) * (1 + rng.gauss(0, 0.03)), 0.0)]
    assert [f.rule for _, f in found] == ["latency_drift"]
    assert 30 <= found[0][0] <= 70 and found[0][1].change_pct > 20.0
    step = TrendTracker("latency", TrendParams(persist=3))
    for i in range(100):
        step.observe(float(i), 100.0 * (1 + rng.gauss(0, 0.01)), 0.0)
    assert [f for i in range(60) for f in step.observe(100.0 + i, 150.0 * (1 + rng.gauss(0, 0.01)), 0.2)] == []


def test_one_spike_never_makes_an_incident_a_sustained_shift_still_does() -> None:
    """A single spike keeps the recent window's mean past mean + 2 sigma for current_size points — as long as
    longer than the minimum duration, so it used to make a std_degradation incident (NAB exchange-4_cpc) —
    but never its median: a rule holds only when it holds for the median too. A lasting shift holds for
    both."""
    rng = random.Random(11)
    base = [rng.gauss(0.09, 0.005) for _ in range(100)]
    spike = TrendTracker("other", TrendParams())
    for i, v in enumerate(base):
        assert spike.observe(float(i), v, 0.0) == []
    tail = [1.35] + [rng.gauss(0.09, 0.005) for _ in range(60)]   # 50 sigma, one point; the detector: 1.0
    assert [f for i, v in enumerate(tail) for f in spike.observe(100.0 + i, v, 1.0 if i == 0 else 0.0)] == []
    shift = TrendTracker("other", TrendParams())
    for i, v in enumerate(base):
        shift.observe(float(i), v, 0.0)
    found = [(i, f.rule) for i in range(30) for f in shift.observe(100.0 + i, rng.gauss(0.2, 0.005), 0.995)]
    # the median (of 10: the mean of the middle two) crosses the bound at the shift's 5th point, and the
    # rule has held for `persist` (10) points at its 14th
    assert found == [(13, "std_degradation")]


def test_a_condition_judged_usual_is_not_reported_later_in_its_course() -> None:
    """The detector's verdict is taken once, when the condition has lasted `persist` points: a long
    condition it called usual (a burst fading, a busy evening) is not reported when one of its later points
    happens to reach `unusual` (NAB Twitter_volume_AAPL); a new condition is judged afresh."""
    p = TrendParams(baseline_size=30, current_size=5, min_baseline=20, persist=3, clear=10, unusual=0.7)
    t = TrendTracker("latency", p)
    for i in range(40):
        t.observe(float(i), 100.0, 0.0)
    # +200 %: the rule holds for ~25 points before the baseline has absorbed the step; the detector called
    # it usual at its start (0.1) and one point 15 points in 0.9
    got = [f.rule for i in range(40) for f in t.observe(40.0 + i, 300.0, 0.9 if i == 15 else 0.1)]
    assert got == []
    for i in range(40):
        t.observe(80.0 + i, 300.0, 0.0)   # absorbed into the baseline: the condition ended, clear re-arms
    got = [f.rule for i in range(10) for f in t.observe(120.0 + i, 900.0, 0.9)]
    assert got == ["latency_increase"]
