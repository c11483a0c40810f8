"""Scoring of each outcome kind on small synthetic runs (pure: records in, scores out)."""

from __future__ import annotations

from kaizen.lab.schema import Oracle
from kaizen.lab.scoring import CaseRecord, ImprovementRecord, harmful, score_case, totals, within

FIXABLE = Oracle(fault=True, component="api", metric="latency", fixable=True,
                 fix=[{"knob": "cache_size", "direction": "up"}])  # type: ignore[list-item]
UNFIXABLE = Oracle(fault=True, component="api", metric="error_rate", fixable=False)
CONTROL = Oracle(fault=False)


def _series(levels: list[tuple[float, float, float]]) -> list[tuple[float, float, float, float]]:
    """(from, to, latency) segments → one row per second (error 0.2 %, throughput 100)."""
    rows = []
    for start, end, lat in levels:
        t = start
        while t < end:
            rows.append((t, lat, 0.2, 100.0))
            t += 1.0
    return rows


def _kept(at: float, comp: str = "api", changes: list[dict[str, object]] | None = None,
          with_change: dict[str, float] | None = None) -> ImprovementRecord:
    return ImprovementRecord("imp-1", comp, "latency", at - 40, "completed",
                             changes if changes is not None else [{"parameter": "cache_size", "old": 1024,
                                                                   "new": 2048}],
                             verdict_at=at, with_change=with_change or {"latency": 10.0},
                             without_change={"latency": 40.0})


def _fixed_run(**kw: object) -> CaseRecord:
    rec = CaseRecord("c", FIXABLE, end=200.0, insights=[(-30.0, "api", "latency"), (6.0, "api", "latency")],
                     top_component="api",
                     series={"api": _series([(-60, 0, 10.0), (0, 100, 40.0), (100, 201, 10.5)])})
    rec.improvements = [_kept(100.0)]
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_detected_localized_mitigated_with_times() -> None:
    s = score_case(_fixed_run())
    assert (s.detected, s.time_to_detect, s.localized) == (True, 6.0, True)
    assert s.mitigated and s.time_to_mitigate == 100.0 and s.right_knob
    assert (s.pre_fault, s.faulted, s.final) == (10.0, 40.0, 10.5)
    assert (s.kept, s.rollbacks, s.harmful_kept) == (1, 0, 0)


def test_insights_before_onset_or_elsewhere_are_not_a_detection() -> None:
    s = score_case(_fixed_run(insights=[(-5.0, "api", "latency"), (8.0, "db", "latency")], top_component="db"))
    assert s.detected is False and s.time_to_detect is None and s.localized is False


def test_not_mitigated_when_metric_stays_out_of_margin() -> None:
    rec = _fixed_run(series={"api": _series([(-60, 0, 10.0), (0, 201, 40.0)])})
    s = score_case(rec)
    assert s.mitigated is False and s.time_to_mitigate is None


def test_not_mitigated_without_a_kept_change_even_if_metric_recovers() -> None:
    rec = _fixed_run()
    rec.improvements = [ImprovementRecord("imp-2", "api", "latency", 50, "rolled_back", [], verdict_at=95.0)]
    s = score_case(rec)
    assert s.mitigated is False and s.rollbacks == 1 and s.kept == 0 and s.right_knob is False


def test_a_kept_change_on_another_component_does_not_mitigate() -> None:
    rec = _fixed_run()
    rec.improvements = [_kept(100.0, comp="web")]
    assert score_case(rec).mitigated is False


def test_wrong_knob_is_reported() -> None:
    rec = _fixed_run()
    rec.improvements = [_kept(100.0, changes=[{"parameter": "pool_size", "old": 10, "new": 15}])]
    s = score_case(rec)
    assert s.mitigated is True and s.right_knob is False


def test_harmful_kept_change_is_counted() -> None:
    rec = _fixed_run()
    rec.improvements = [_kept(100.0, with_change={"latency": 60.0})]
    s = score_case(rec)
    assert s.harmful_kept == 1 and "latency 40.0 → 60.0" in s.notes[0]
    assert harmful({"error_rate": 1.0}, {"error_rate": 0.2}) and not harmful({"error_rate": 0.25}, {"error_rate": 0.2})
    assert harmful({"throughput": 90.0}, {"throughput": 100.0}) == ["throughput 100.0 → 90.0 req/s"]


def test_unfixable_fault_has_no_mitigation_score() -> None:
    rec = CaseRecord("u", UNFIXABLE, end=200.0, insights=[(12.0, "api", "error_rate")], top_component="api")
    s = score_case(rec)
    assert s.detected and s.localized and s.mitigated is None and s.right_knob is None


def test_control_counts_improvements_and_false_alarms() -> None:
    quiet = score_case(CaseRecord("q", CONTROL, end=200.0, insights=[(-20.0, "api", "latency")]))
    assert (quiet.detected, quiet.control_improvements, quiet.false_alarms) == (None, 0, 0)
    noisy = CaseRecord("n", CONTROL, end=200.0, insights=[(30.0, "api", "latency")])
    noisy.improvements = [ImprovementRecord("imp-9", "api", "latency", 40.0, "rolled_back")]
    s = score_case(noisy)
    assert (s.control_improvements, s.false_alarms, s.rollbacks) == (1, 1, 1)


def test_margin_direction() -> None:
    assert within("latency", 11.0, 10.0, 0.25, 0.0) and not within("latency", 13.0, 10.0, 0.25, 0.0)
    assert within("latency", 3.0, 10.0, 0.25, 0.0)  # better than before is within
    assert within("error_rate", 0.6, 0.2, 0.25, 0.5) and not within("error_rate", 0.8, 0.2, 0.25, 0.5)
    assert not within("throughput", 70.0, 100.0, 0.25, 0.0) and within("throughput", 130.0, 100.0, 0.25, 0.0)


def test_totals_rates_and_percentiles() -> None:
    scores = [score_case(_fixed_run()),
              score_case(CaseRecord("u", UNFIXABLE, end=200.0, insights=[(20.0, "api", "x")], top_component="db")),
              score_case(CaseRecord("n", CONTROL, end=200.0))]
    t = totals(scores)
    assert (t["fault_cases"], t["mitigable_cases"], t["controls"]) == (2, 1, 1)
    assert t["detection_rate"] == 1.0 and t["localization_rate"] == 0.5 and t["mitigation_rate"] == 1.0
    assert t["time_to_detect_s"] == {"p50": 13.0, "p90": 18.6, "max": 20.0}
    assert t["harmful_kept"] == 0 and t["control_improvements"] == 0
