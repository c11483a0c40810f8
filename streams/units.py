"""Metric units: the one place a point's value is read in its unit and turned into the canonical form.

CloudWatch sends a Unit with every datum; a rate may be sent as Percent (ErrorRate 0.2 = 0.2 %) or as a
plain fraction (0.002, Unit "None"). Everything downstream must read both alike, so points are
normalised once, when dedup writes them to the clean topic (streams/metric_codec.py):

- Canonical form of a ratio is **Percent** (0–100, unit "Percent"), CloudWatch's own convention and
  what the trend rules (error rate +5 points, utilisation > 80 %) are written in.
- A point in unit "Percent" is kept as it is. A point with no unit ("None" or empty) whose metric name
  says it is a ratio (RATIO_NAME: error/fault/failure/success/hit/miss… rate or ratio, …Percent, …Pct)
  is a fraction when its value is within [0, 1] and becomes value × 100; a value above 1 cannot be a
  fraction and is taken as percent already. Producers should send the Unit: a unit-less 0.5 % is read
  as 50 %.
- Every other unit is left as sent (latency keeps its time unit: verdicts compare a series with its own
  baseline).

Consumers that want a fraction (guardrails' success rate, the degradation formula's error rate) call
`fraction()` on a canonical value; nothing else converts units.
"""

from __future__ import annotations

import re

PERCENT = "Percent"
NO_UNIT = frozenset({"None", "", "none"})
RATIO_NAME = re.compile(
    r"(error|fault|fail\w*|success|hit|miss|drop\w*|loss|retr\w*|throttl\w*|reject\w*|timeout)[_ .-]?(rate|ratio)"
    r"|ratio|percent|pct", re.I)
_ratio_names: dict[str, bool] = {}


def is_ratio_name(metric_name: str) -> bool:
    """Whether a metric of this name is a ratio (cached: names repeat on every point)."""
    known = _ratio_names.get(metric_name)
    if known is None:
        if len(_ratio_names) > 100_000:
            _ratio_names.clear()
        known = _ratio_names[metric_name] = bool(RATIO_NAME.search(metric_name))
    return known


def canonical(metric_name: str, value: float, unit: str) -> tuple[float, str]:
    """The canonical (value, unit) of a point (see the module docstring)."""
    if unit == PERCENT or unit not in NO_UNIT or not is_ratio_name(metric_name):
        return value, unit
    return (value * 100.0 if 0.0 <= value <= 1.0 else value), PERCENT


def fraction(value: float, unit: str) -> float:
    """A canonical ratio as a fraction of 1 (Percent / 100); a value in another unit is returned as is."""
    return value / 100.0 if unit == PERCENT else value
