"""The trend rules (docs/formulas.md) (baseline vs. recent window) as pure functions plus a small per-series tracker."""

from __future__ import annotations

import math
import re
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_TREND_PARAMS", "ErrorUnit", "MetricKind", "TrendFinding", "TrendParams", "TrendTracker",
    "any_rule_holds", "classify_metric", "decide", "error_unit_for", "evaluate_trend", "is_degraded",
    "rules_from_stats", "window_stats",
]

MetricKind = Literal["latency", "error_rate", "utilization", "throughput", "other"]
# How an error metric is expressed, which decides what "> 5 % increase" means:
#   percent: values are percentages (ErrorRate = 2.5 means 2.5 %) -> increase of > 5 percentage points
#   ratio:   values are fractions in [0, 1]                         -> increase of > 0.05 (5 points)
#   count:   values are counts (Errors, 5XXError)                   -> relative increase of > 5 %
# Percentage points for rates because a relative 5 % of a 0.1 % error rate (0.100 -> 0.105) is noise,
# while a jump from 1 % to 6 % of failed requests is exactly the spike the rule means.
ErrorUnit = Literal["percent", "ratio", "count"]

# Order matters: the first matching group wins, errors first (so "5XXErrorCount" is an error metric).
_PATTERNS: tuple[tuple[MetricKind, re.Pattern[str]], ...] = (
    ("error_rate", re.compile(r"error|fault|fail|5xx|4xx|throttl|exception|dead.?letter|timeout", re.I)),
    ("latency", re.compile(r"latency|duration|responsetime|response_time|elapsed|delay|iteratorage"
                           r"|(^|[^a-z])p(50|90|95|99)([^0-9]|$)|wait.?time|time.?to", re.I)),
    # Only percentages: FreeableMemory or CPUCreditBalance are not "utilisation > 80 %".
    ("utilization", re.compile(r"utili[sz]ation|used.?percent|percent.?used|^cpu(?!.*credit)", re.I)),
    ("throughput", re.compile(r"count|invocations|throughput|requests|bytes.?(in|out)|network.?(in|out)"
                              r"|messages(sent|received|published|deleted)|records|ops|tps|rps|qps|incoming|outgoing|calls|hits", re.I)),
)


def classify_metric(metric_name: str) -> MetricKind:
    """Kind of a CloudWatch metric from its name (Latency, 5XXError, CPUUtilization, Invocations...)."""
    for kind, pat in _PATTERNS:
        if pat.search(metric_name):
            return kind
    return "other"


def error_unit_for(metric_name: str) -> ErrorUnit:
    """Rates and percentages are compared in points, raw error counts relatively."""
    if re.search(r"rate|percent|pct|ratio", metric_name, re.I):
        return "percent"
    return "count"


@dataclass(frozen=True, slots=True)
class TrendParams:
    baseline_size: int = 60        # points in the baseline window (configurable per deployment)
    current_size: int = 10         # points in the recent window compared against the baseline
    min_baseline: int = 30         # rules stay silent until the baseline holds this many points
    std_k: float = 2.0             # docs/formulas.md: current > baseline + 2 * std -> degradation
    latency_increase: float = 0.20     # docs/formulas.md: latency increase > +20 %
    error_increase: float = 5.0        # docs/formulas.md: error rate spike > 5 % (see ErrorUnit for the unit)
    utilization_max: float = 80.0      # docs/formulas.md: resource utilisation > 80 %
    throughput_drop: float = 0.30      # docs/formulas.md: throughput drop > 30 % against baseline
    # One insight per incident: a rule holds only when it holds for the recent window's median as well as
    # its mean (more than half of the recent points past the threshold: one spike moves the mean for
    # current_size points, never the median), it must hold for `persist` consecutive points before it is
    # reported (a minimum duration), then the incident is reported once and re-arms only after no rule held
    # for `clear` points.
    persist: int = 10
    clear: int = 60
    # ... and the incident must also be unusual for the series itself: by the time it has lasted `persist`
    # points, the series' detector likelihood reached `unusual` during it (a drop at night that happens
    # every night is not one). It is judged once: a condition judged usual is not reported however long
    # it lasts (a long condition meets a likely-enough point sooner or later). persist, clear and unusual
    # are the gate benchmarks/nab_quality.py's protocol chose (docs/detection.md): the strictest of its
    # grid, because no looser gate added a detection out of corpus that was worth its false alarms.
    unusual: float = 0.99
    # A latency that climbs steadily (a leak) moves its rolling baseline along and stays within the
    # recent-vs-baseline rules, and a detector learns each small step as usual: the latency rule is also
    # read along the whole ring — a least-squares line over baseline + recent window that rises by more
    # than `latency_increase` from its start, with a slope of at least `drift_t` standard errors, and
    # each quarter of the ring above the one before (a climb, not a step). Such a
    # line is its own evidence (no detector gate); it is fitted only while the recent mean is at least
    # latency_increase / 4 above the baseline mean.
    drift_t: float = 6.0


# One instance for every tracker of the default parameters (frozen): no construction per tracker, and
# the columns recognise their trackers' parameters by identity first.
DEFAULT_TREND_PARAMS = TrendParams()


@dataclass(frozen=True, slots=True)
class TrendFinding:
    rule: str          # std_degradation | latency_increase | error_rate_increase | high_utilization | throughput_drop
    severity: str      # low | medium | high | critical
    baseline: float    # mean of the baseline window
    current: float     # mean of the recent window
    change_pct: float  # (current - baseline) / |baseline| * 100 (inf if the baseline is 0 and current > 0)


def window_stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0, 0 for an empty window)."""
    n = len(values)
    if n == 0:
        return 0.0, 0.0
    m = math.fsum(values) / n
    var = math.fsum((v - m) * (v - m) for v in values) / n
    return m, math.sqrt(var)


def _change_pct(base: float, cur: float) -> float:
    if base == 0.0:
        return 0.0 if cur == 0.0 else math.copysign(math.inf, cur)
    return (cur - base) / abs(base) * 100.0


def _severity(ratio: float) -> str:
    """Severity from how far a rule is past its own threshold (ratio = excess / threshold)."""
    if ratio >= 4.0:
        return "critical"
    if ratio >= 2.0:
        return "high"
    if ratio >= 1.25:
        return "medium"
    return "low"


def is_degraded(baseline: Sequence[float], current: Sequence[float], std_k: float = 2.0,
                higher_is_worse: bool = True) -> bool:
    """Degradation rule (docs/formulas.md): mean(current) > mean(baseline) + k * std(baseline) (mirrored if lower is worse)."""
    if not baseline or not current:
        return False
    bm, bs = window_stats(baseline)
    cm = math.fsum(current) / len(current)
    return cm > bm + std_k * bs if higher_is_worse else cm < bm - std_k * bs


def evaluate_trend(baseline: Sequence[float], current: Sequence[float], kind: MetricKind,
                   params: TrendParams | None = None, error_unit: ErrorUnit = "percent") -> list[TrendFinding]:
    """All trend rules that hold for this baseline / current pair (pure; no state, no time)."""
    if len(baseline) < 1 or len(current) < 1:
        return []
    bm, bs = window_stats(baseline)
    return rules_from_stats(bm, bs, math.fsum(current) / len(current), kind, params, error_unit)


def rules_from_stats(bm: float, bs: float, cm: float, kind: MetricKind, params: TrendParams | None = None,
                     error_unit: ErrorUnit = "percent") -> list[TrendFinding]:
    """The rules on summary statistics: baseline mean `bm` and std `bs`, recent mean `cm`."""
    p = params or TrendParams()
    pct = _change_pct(bm, cm)
    out: list[TrendFinding] = []
    # Throughput degrades downwards; every other kind (latency, errors, utilisation, other) upwards.
    down = kind == "throughput"
    if bs > 0.0 and (cm < bm - p.std_k * bs if down else cm > bm + p.std_k * bs):
        z = abs(cm - bm) / bs
        out.append(TrendFinding("std_degradation", _severity(z / (p.std_k * 1.25)), bm, cm, pct))
    if kind == "latency" and bm > 0.0 and (cm - bm) / bm > p.latency_increase:
        out.append(TrendFinding("latency_increase", _severity((cm - bm) / bm / p.latency_increase), bm, cm, pct))
    elif kind == "error_rate":
        if error_unit == "count":
            rise = (cm - bm) / bm if bm > 0.0 else (math.inf if cm > 0.0 else 0.0)
            limit = p.error_increase / 100.0
        else:
            rise = (cm - bm) * (100.0 if error_unit == "ratio" else 1.0)
            limit = p.error_increase
        if rise > limit:
            out.append(TrendFinding("error_rate_increase", _severity(rise / limit), bm, cm, pct))
    elif kind == "utilization" and cm > p.utilization_max:
        sev = "critical" if cm >= 95.0 else "high" if cm >= 90.0 else "medium"
        out.append(TrendFinding("high_utilization", sev, bm, cm, pct))
    elif kind == "throughput" and bm > 0.0 and (bm - cm) / bm > p.throughput_drop:
        out.append(TrendFinding("throughput_drop", _severity((bm - cm) / bm / p.throughput_drop), bm, cm, pct))
    return out


def any_rule_holds(bm: float, bs: float, cm: float, kind: MetricKind, params: TrendParams | None = None,
                   error_unit: ErrorUnit = "percent") -> bool:
    """bool(rules_from_stats(...)) without building findings: the per-point test of the usual quiet
    point (tests/unit/test_trends.py checks the two agree)."""
    p = params or TrendParams()
    if kind == "throughput":
        return (bs > 0.0 and cm < bm - p.std_k * bs) or (bm > 0.0 and (bm - cm) / bm > p.throughput_drop)
    if bs > 0.0 and cm > bm + p.std_k * bs:
        return True
    if kind == "latency":
        return bm > 0.0 and (cm - bm) / bm > p.latency_increase
    if kind == "utilization":
        return cm > p.utilization_max
    if kind == "error_rate":
        if error_unit == "count":
            rise = (cm - bm) / bm if bm > 0.0 else (math.inf if cm > 0.0 else 0.0)
            return rise > p.error_increase / 100.0
        return (cm - bm) * (100.0 if error_unit == "ratio" else 1.0) > p.error_increase
    return False


# version, filled count, write position, active-rule bitmask, steps since exact recompute, ref, sums,
# points the rules held in a row, points none held in a row, whether the current incident was reported
_STATE = struct.Struct("<BIIQIddddIIB")
# v4 appends the peak likelihood of the condition being held (without it a tracker restored mid-condition
# forgot the detector had already called the change usual and reported it a second time)
_PEAK = struct.Struct("<d")
_RULES = ("std_degradation", "latency_increase", "error_rate_increase", "high_utilization", "throughput_drop",
          "latency_drift")


class TrendTracker:
    """Per-series rolling baseline + recent window; one finding per incident.

    The ring holds baseline_size + current_size values: the newest current_size are the recent window and
    the ones before them the baseline. An incident starts when some rule has held for `persist` points in
    a row; it is reported once (its most specific rule), and the next incident can start only after no
    rule held for `clear` points in a row (a persistent change is absorbed into the baseline first).

    Window sums are kept incrementally (O(1) per point instead of O(window)), relative to the first
    value seen to limit cancellation, and recomputed exactly once per ring length to bound drift.
    """

    __slots__ = ("kind", "error_unit", "p", "_ring", "_filled", "_pos", "_active", "_steps", "_ref",
                 "_bsum", "_bsq", "_csum", "_held", "_calm", "_reported", "_peak")

    def __init__(self, kind: MetricKind = "other", params: TrendParams | None = None,
                 error_unit: ErrorUnit = "percent") -> None:
        self.kind: MetricKind = kind
        self.error_unit: ErrorUnit = error_unit
        self.p = params or DEFAULT_TREND_PARAMS
        self._ring = array("d", bytes(8 * (self.p.baseline_size + self.p.current_size)))
        self._filled = 0
        self._pos = 0
        self._active = 0
        self._steps = 0
        self._ref = 0.0
        self._bsum = 0.0
        self._bsq = 0.0
        self._csum = 0.0
        self._held = 0        # points in a row some rule held
        self._calm = 0        # points in a row no rule held
        self._reported = False
        self._peak = 0.0      # the highest detector likelihood while the rules held (-1: judged usual)

    @classmethod
    def for_metric(cls, metric_name: str, params: TrendParams | None = None) -> TrendTracker:
        return cls(classify_metric(metric_name), params, error_unit_for(metric_name))

    def windows(self) -> tuple[list[float], list[float]]:
        """(baseline, current) in time order."""
        size = len(self._ring)
        ordered = [self._ring[(self._pos - self._filled + i) % size] for i in range(self._filled)]
        cur_n = min(self.p.current_size, len(ordered))
        return ordered[: len(ordered) - cur_n], ordered[len(ordered) - cur_n:]

    def observe(self, timestamp: float, value: float, surprise: float = 1.0) -> list[TrendFinding]:
        """Add one point (timestamp is accepted for API symmetry; rules work on point order); `surprise`
        is the series' detector likelihood of the point (1.0: no detector, the rules alone decide).

        The window update below is mirrored operation for operation by the columnar trackers' compiled
        loop (trend_kernel.py); what follows it is `decide`, which both call."""
        del timestamp
        if not math.isfinite(value):
            return []
        ring = self._ring
        size = len(ring)
        cs = self.p.current_size
        if self._filled == 0:
            self._ref = value
        r = self._ref
        pos = self._pos
        if self._filled == size:            # the oldest value leaves the baseline
            old = ring[pos] - r
            self._bsum -= old
            self._bsq -= old * old
        if self._filled >= cs:              # the oldest recent value moves into the baseline
            mv = ring[(pos - cs) % size] - r
            self._csum -= mv
            self._bsum += mv
            self._bsq += mv * mv
        ring[pos] = value
        self._csum += value - r
        self._pos = (pos + 1) % size
        self._filled = min(self._filled + 1, size)
        self._steps += 1
        if self._steps >= size:
            self._resum()
        nb = self._filled - cs
        if nb < self.p.min_baseline:
            return []
        bmean = self._bsum / nb
        bm = r + bmean
        bs = math.sqrt(max(self._bsq / nb - bmean * bmean, 0.0))
        cm = r + self._csum / cs
        return decide(self, bm, bs, cm, surprise)

    def _drift(self) -> TrendFinding | None:
        """The latency_drift rule on the full ring (see TrendParams.drift_t), None when it does not hold."""
        base, cur = self.windows()
        ys = base + cur
        n = len(ys)
        mx = (n - 1) / 2.0
        my = math.fsum(ys) / n
        sxx = n * (n * n - 1) / 12.0
        slope = math.fsum((i - mx) * (y - my) for i, y in enumerate(ys)) / sxx
        start = my - slope * mx
        if slope <= 0.0 or start <= 0.0 or slope * (n - 1) / start <= self.p.latency_increase:
            return None
        # a climb, not a step: each quarter of the ring above the one before by at least 0.3 of the
        # average rise per quarter (a step rises once and is flat around it)
        cuts = [round(j * n / 4) for j in range(5)]
        ms = [math.fsum(ys[a:b]) / (b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
        each = (ms[-1] - ms[0]) / 3.0
        if each <= 0.0 or any(b - a < 0.3 * each for a, b in zip(ms, ms[1:], strict=False)):
            return None
        resid = math.fsum((y - (start + slope * i)) ** 2 for i, y in enumerate(ys)) / max(1, n - 2)
        if slope < self.p.drift_t * math.sqrt(resid / sxx):
            return None
        end = start + slope * (n - 1)
        rise = (end - start) / start
        return TrendFinding("latency_drift", _severity(rise / self.p.latency_increase), start, end, rise * 100.0)

    def _resum(self) -> None:
        """Exact window sums from the ring (bounds floating drift of the incremental updates). The columns'
        loop forms the same differences and squares (the same IEEE operations) and sums them in the same
        order with math.fsum's algorithm (trend_kernel.fsum_array)."""
        base, cur = self.windows()
        r = self._ref
        self._bsum = math.fsum(v - r for v in base)
        self._bsq = math.fsum((v - r) * (v - r) for v in base)
        self._csum = math.fsum(v - r for v in cur)
        self._steps = 0

    def to_state(self) -> bytes:
        return (_STATE.pack(4, self._filled, self._pos, self._active, self._steps, self._ref, self._bsum,
                            self._bsq, self._csum, self._held, self._calm, self._reported)
                + _PEAK.pack(self._peak) + self._ring.tobytes())

    @classmethod
    def from_state(cls, data: bytes, kind: MetricKind = "other", params: TrendParams | None = None,
                   error_unit: ErrorUnit = "percent") -> TrendTracker:
        t = cls(kind, params, error_unit)
        ver, filled, pos, active, steps, ref, bsum, bsq, csum, held, calm, reported = _STATE.unpack_from(data, 0)
        if ver not in (3, 4):
            raise ValueError(f"unknown TrendTracker state version {ver}")
        off = _STATE.size
        if ver == 4:
            (t._peak,) = _PEAK.unpack_from(data, off)
            off += _PEAK.size
        ring = array("d")
        ring.frombytes(data[off:])
        if len(ring) != len(t._ring):
            raise ValueError("state was written with a different window size")
        t._ring, t._filled, t._pos, t._active, t._steps = ring, filled, pos, active, steps
        t._ref, t._bsum, t._bsq, t._csum = ref, bsum, bsq, csum
        t._held, t._calm, t._reported = held, calm, bool(reported)
        return t


def decide(t: TrendTracker, bm: float, bs: float, cm: float, surprise: float) -> list[TrendFinding]:
    """One point's incident decision from its windows' statistics (baseline mean `bm`, std `bs`, recent
    mean `cm`), after `t`'s window update: the drift rule, the usual quiet point, then the incident state
    machine (held / calm / active / peak / reported). TrendTracker.observe calls it for every point past
    the minimum baseline; the columnar trackers (trend_columns.py) call it for the points that are not the
    usual quiet point, on a tracker loaded with the row (its ring, fill, position and incident fields),
    and do the quiet branch (the first `if`) in their compiled loop for the others: a change of the gate
    there must be mirrored in trend_kernel.quiet_run (tests/unit/test_trend_columns.py says where); a
    change of what follows it is not."""
    p = t.p
    drift = t._drift() if t.kind == "latency" and bm > 0.0 \
        and cm - bm > bm * p.latency_increase / 4 and t._filled == len(t._ring) else None
    if not t._active and drift is None and not any_rule_holds(bm, bs, cm, t.kind, p, t.error_unit):
        t._calm += 1   # the usual quiet point: nothing held before, nothing holds now
        if t._calm >= p.clear:
            t._reported = False
        return []
    found = rules_from_stats(bm, bs, cm, t.kind, p, t.error_unit)
    if found:
        # each rule must hold for the recent window's median too (one spike cannot make an incident)
        ring, cs = t._ring, p.current_size
        size = len(ring)
        recent = sorted(ring[(t._pos - cs + i) % size] for i in range(cs))
        median = (recent[(cs - 1) // 2] + recent[cs // 2]) / 2.0
        robust = {f.rule for f in rules_from_stats(bm, bs, median, t.kind, p, t.error_unit)}
        found = [f for f in found if f.rule in robust]
    if drift is not None:
        found.append(drift)
    now = 0
    for f in found:
        now |= 1 << _RULES.index(f.rule)
    t._active = now
    if not found:
        t._held = 0
        t._peak = 0.0
        t._calm += 1
        if t._calm >= p.clear:
            t._reported = False
        return []
    t._held += 1
    t._calm = 0
    if surprise > t._peak >= 0.0:
        t._peak = surprise
    if t._reported or t._held < p.persist:
        return []
    if t._peak < p.unusual and drift is None:
        # judged once, when it has lasted `persist` points: usual for the series. -1 keeps that
        # verdict until the condition ends (only the drift rule, its own evidence, may still report)
        t._peak = -1.0
        return []
    t._reported = True
    # the most specific rule names the incident; the generic 2-sigma rule only when it is alone
    return [next((f for f in found if f.rule != "std_degradation"), found[0])]
