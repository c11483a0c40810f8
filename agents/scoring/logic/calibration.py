"""Per-series score calibration: a raw score's tail among the series' own scores, one alarm per incident."""

from __future__ import annotations

import math

from river import stats

from agents.scoring.logic.detector_parts import RecentMax

__all__ = ["RawScoreTail", "ScoreCalibrator"]


class ScoreCalibrator:
    """The series' own threshold: a score is reported only when it beats every score of the series' last
    `rest` points (a running maximum of its own score history), so the live threshold of a series is
    max(ANOMALY_THRESHOLD, its recent maximum). One incident gives one alarm; a series that has been
    scoring high (noisy, or in an incident already reported) must surpass itself to alarm again.
    NAB only rewards the first detection in a window and charges every extra one.
    """

    __slots__ = ("recent",)

    def __init__(self, rest: int) -> None:
        self.recent = RecentMax(rest)

    @property
    def bar(self) -> float:
        """What the next score must exceed (the series' recent maximum)."""
        return float(self.recent.top)

    def peek(self, s: float) -> float:
        """What step(s) would return, without learning (River's score_one)."""
        return s if s > self.recent.top else 0.0

    def step(self, s: float) -> float:
        prior = self.recent.push(s)
        return s if s > prior else 0.0

    def pack(self) -> bytes:
        return self.recent.pack()

    def unpack(self, data: bytes, offset: int) -> int:
        return self.recent.unpack(data, offset)


def _spread(raw: float) -> float:
    """A monotone stretch of raw scores: scores in [0, 1] that saturate near 1 (GaussianScorer's
    2|cdf - 0.5|, HalfSpaceTrees) become -log10(1 - raw), so their top is not squeezed into a sliver
    below 1; larger (unbounded) scores continue above. Quantiles commute with it."""
    if raw < 1.0:
        return -math.log10(1.0 - raw) if raw > 0.0 else raw
    return 12.0 + math.log10(raw)


class RawScoreTail:
    """Any model's raw anomaly score (on its own scale) -> [0, 1+] by its tail probability among the
    series' own raw scores: running 90/99/99.9 % quantiles (river.stats.Quantile, P-square), log-linear
    between them and one decade per last quantile gap beyond the top one; `decades` of tail map to 1.
    So one live threshold serves every River model and every series, whatever the scale of its scores.
    """

    __slots__ = ("quantiles", "decades")
    LEVELS = (1.0, 2.0, 3.0)  # -log10 of the tail probability at each quantile

    def __init__(self, decades: float) -> None:
        self.quantiles = [stats.Quantile(0.9), stats.Quantile(0.99), stats.Quantile(0.999)]
        self.decades = decades

    def peek(self, raw: float) -> float:
        raw = _spread(raw)
        q1, q2, q3 = (q.get() for q in self.quantiles)
        if q1 is None or q3 is None or q2 is None or raw <= q1:
            return 0.0
        if raw <= q2:
            lv = 1.0 + (raw - q1) / (q2 - q1) if q2 > q1 else 2.0
        elif raw <= q3:
            lv = 2.0 + (raw - q2) / (q3 - q2) if q3 > q2 else 3.0
        else:
            gap = q3 - q2
            lv = 3.0 + (raw - q3) / gap if gap > 0.0 else self.decades
        # not clipped: "beats the recent maximum" then still tells a far stronger score from a saturated one
        return lv / self.decades

    def update(self, raw: float) -> float:
        s = self.peek(raw)
        t = _spread(raw)
        for q in self.quantiles:
            q.update(t)
        return s
