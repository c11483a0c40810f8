"""The impact score, priority levels and prioritisation order (pure)."""

from __future__ import annotations

from typing import Literal, Protocol, TypeVar

__all__ = [
    "CONFIDENCE_THRESHOLD",
    "PRIORITY_THRESHOLDS",
    "RISK_PENALTIES",
    "SEVERITY_MULTIPLIERS",
    "Priority",
    "Rankable",
    "impact_score",
    "prioritize",
    "priority_for",
    "severity_rank",
    "sort_key",
]

Priority = Literal["critical", "high", "medium", "low"]

# docs/formulas.md, impact score: severity multiplier, confidence adjustment, risk penalty.
SEVERITY_MULTIPLIERS: dict[str, float] = {"critical": 2.0, "high": 1.5, "medium": 1.0, "low": 0.5}
RISK_PENALTIES: dict[str, float] = {"high": 0.5, "medium": 0.8, "low": 1.0}
CONFIDENCE_THRESHOLD = 0.7
LOW_CONFIDENCE_FACTOR = 0.5
# docs/formulas.md, priority levels: critical > 5000, high > 1000, medium > 100, else low.
PRIORITY_THRESHOLDS: tuple[tuple[float, Priority], ...] = ((5000.0, "critical"), (1000.0, "high"), (100.0, "medium"))

_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_RISK_RANK = {"low": 0, "medium": 1, "high": 2}


def impact_score(
    performance_gain_percentage: float,
    affected_users_per_hour: float,
    frequency_per_day: float,
    severity: str,
    confidence_score: float,
    risk_level: str,
) -> float:
    """(gain × users × frequency) / 100, × severity multiplier, × 0.5 if confidence < 0.7, × risk penalty.

    Unknown severity or risk names raise ValueError (they are a bug upstream, not a zero score).
    """
    if severity not in SEVERITY_MULTIPLIERS:
        raise ValueError(f"unknown severity {severity!r}; expected one of {sorted(SEVERITY_MULTIPLIERS)}")
    if risk_level not in RISK_PENALTIES:
        raise ValueError(f"unknown risk level {risk_level!r}; expected one of {sorted(RISK_PENALTIES)}")
    base = performance_gain_percentage * affected_users_per_hour * frequency_per_day / 100.0
    base *= SEVERITY_MULTIPLIERS[severity]
    if confidence_score < CONFIDENCE_THRESHOLD:
        base *= LOW_CONFIDENCE_FACTOR
    base *= RISK_PENALTIES[risk_level]
    return base


def priority_for(score: float) -> Priority:
    """critical > 5000, high > 1000, medium > 100, otherwise low."""
    for threshold, name in PRIORITY_THRESHOLDS:
        if score > threshold:
            return name
    return "low"


class Rankable(Protocol):
    """What the prioritisation order needs of an opportunity."""

    @property
    def severity(self) -> str: ...
    @property
    def impact_score(self) -> float: ...
    @property
    def risk_level(self) -> str: ...
    @property
    def confidence_score(self) -> float: ...


_T = TypeVar("_T", bound=Rankable)


def sort_key(opp: Rankable) -> tuple[int, float, int, float]:
    """The prioritisation rules (docs/formulas.md) as an ascending sort key.

    1. critical severity first; 2. impact score descending; 3. low risk preferred;
    4. high confidence preferred. (Rule 5 — system-wide needs approval — is the
    opportunity's requires_approval flag, not an ordering.)
    """
    critical_first = 0 if opp.severity == "critical" else 1
    return (
        critical_first,
        -float(opp.impact_score),
        _RISK_RANK.get(opp.risk_level, 1),
        -float(opp.confidence_score),
    )


def prioritize(opps: list[_T]) -> list[_T]:
    """A new list in priority order (docs/formulas.md) (stable for equal keys)."""
    return sorted(opps, key=sort_key)


def severity_rank(severity: str) -> int:
    """0 for critical … 3 for low (for callers that want a full severity order)."""
    return _SEVERITY_RANK.get(severity, 2)
