"""Impact score, priority levels and prioritisation order of the improvement cycle."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agents.opportunities.logic.impact import impact_score, prioritize, priority_for, sort_key


def test_seed_worked_example_is_7200_and_critical() -> None:
    # 30 % latency reduction × 1000 users/hour × 24/day / 100, no adjustments (high confidence, low risk)
    score = impact_score(30, 1000, 24, "medium", 0.9, "low")
    assert score == pytest.approx(7200.0)
    assert priority_for(score) == "critical"


@pytest.mark.parametrize(("severity", "factor"), [("critical", 2.0), ("high", 1.5), ("medium", 1.0), ("low", 0.5)])
def test_severity_multipliers(severity: str, factor: float) -> None:
    assert impact_score(10, 100, 10, severity, 0.9, "low") == pytest.approx(100.0 * factor)


@pytest.mark.parametrize(("risk", "factor"), [("high", 0.5), ("medium", 0.8), ("low", 1.0)])
def test_risk_penalties(risk: str, factor: float) -> None:
    assert impact_score(10, 100, 10, "medium", 0.9, risk) == pytest.approx(100.0 * factor)


def test_low_confidence_halves_and_threshold_is_strict() -> None:
    assert impact_score(10, 100, 10, "medium", 0.69, "low") == pytest.approx(50.0)
    assert impact_score(10, 100, 10, "medium", 0.7, "low") == pytest.approx(100.0)


def test_all_adjustments_compose() -> None:
    assert impact_score(30, 1000, 24, "critical", 0.5, "high") == pytest.approx(7200 * 2 * 0.5 * 0.5)


def test_unknown_levels_raise() -> None:
    with pytest.raises(ValueError, match="severity"):
        impact_score(1, 1, 1, "urgent", 1.0, "low")
    with pytest.raises(ValueError, match="risk"):
        impact_score(1, 1, 1, "low", 1.0, "extreme")


@pytest.mark.parametrize(
    ("score", "priority"),
    [(5000.01, "critical"), (5000, "high"), (1000.5, "high"), (1000, "medium"), (100.1, "medium"),
     (100, "low"), (0, "low")],
)
def test_priority_boundaries(score: float, priority: str) -> None:
    assert priority_for(score) == priority


@dataclass
class Opp:
    name: str
    severity: str
    impact_score: float
    risk_level: str
    confidence_score: float


def test_prioritisation_rules() -> None:
    opps = [
        Opp("big-high", "high", 9000, "low", 0.9),
        Opp("crit-small", "critical", 10, "high", 0.5),
        Opp("mid-risky", "medium", 500, "high", 0.9),
        Opp("mid-safe", "medium", 500, "low", 0.8),
        Opp("mid-safe-sure", "medium", 500, "low", 0.95),
    ]
    order = [o.name for o in prioritize(opps)]
    assert order == ["crit-small", "big-high", "mid-safe-sure", "mid-safe", "mid-risky"]
    assert sort_key(opps[1]) < sort_key(opps[0])
