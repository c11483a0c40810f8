"""`kaizen bench` fault_lab: a lab report's rates and time percentiles beside AIOpsLab's figures."""

from __future__ import annotations

from benchmarks.fault_lab import summarize
from kaizen.lab.schema import Oracle
from kaizen.lab.scoring import CaseRecord, score_case, totals


def test_summary_puts_the_lab_rates_beside_aiopslab() -> None:
    scores = [score_case(CaseRecord("f", Oracle(fault=True, component="a", metric="latency"), end=100.0,
                                    insights=[(4.0, "a", "latency")], top_component="a")),
              score_case(CaseRecord("c", Oracle(fault=False), end=100.0))]
    out = summarize({"totals": totals(scores), "cases": [s.as_dict() for s in scores]})
    assert out["kaizen"]["detection"] == 1.0 and out["kaizen"]["localization"] == 1.0
    assert out["kaizen"]["mitigation"] is None  # no fixable case
    assert out["kaizen"]["time_to_detect_s"]["p50"] == 4.0
    assert out["aiopslab"]["localization"] == "46–62 %" and out["controls"] == 1
    assert out["per_case"]["c"]["control_improvements"] == 0
