"""Scores one case's run against its oracle, and the totals over a library (pure: records in, scores out).

Times are seconds relative to the fault's onset (a control's fault-free onset). See docs/lab.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kaizen.lab.schema import Oracle

DEFAULT_MARGIN_ABS = {"latency": 2.0, "error_rate": 0.5, "throughput": 0.0}
PRE_WINDOW = 20.0  # seconds before onset that define the pre-fault level
AFTER_WINDOW = 15.0  # seconds after a verdict (and at the end) over which the metric is judged
HARM_LATENCY = 0.05  # a kept change that adds more than 5 % latency (and 0.5 ms) …
HARM_ERROR_PP = 0.2  # … or 0.2 percentage points of errors, or removes 2 % of throughput, is harmful
HARM_THROUGHPUT = 0.02
METRICS = ("latency", "error_rate", "throughput")


@dataclass
class ImprovementRecord:
    """One improvement the loop started on the case's tenant."""

    improvement_id: str
    component: str
    problem_type: str
    started_at: float
    status: str  # last status seen
    changes: list[dict[str, Any]] = field(default_factory=list)  # parameter, old, new
    verdict_at: float | None = None
    # expected metrics of the component at the verdict, with the change and without it (same load, same fault)
    with_change: dict[str, float] = field(default_factory=dict)
    without_change: dict[str, float] = field(default_factory=dict)


@dataclass
class CaseRecord:
    """What happened to one case, as the lab observed it."""

    name: str
    oracle: Oracle
    end: float  # when observation stopped
    insights: list[tuple[float, str, str]] = field(default_factory=list)  # (at, component, problem family)
    top_component: str | None = None  # the tenant's top open opportunity when the first cycle was triggered
    top_problem: str | None = None
    improvements: list[ImprovementRecord] = field(default_factory=list)
    # component → [(t, latency ms, error rate %, throughput req/s)], expected (noise-free) values each second
    series: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)


@dataclass
class CaseScore:
    name: str
    fault: bool
    fixable: bool
    detected: bool | None = None
    time_to_detect: float | None = None
    localized: bool | None = None
    top_component: str | None = None
    mitigated: bool | None = None
    time_to_mitigate: float | None = None
    right_knob: bool | None = None
    pre_fault: float | None = None
    faulted: float | None = None
    final: float | None = None
    improvements: int = 0
    kept: int = 0
    rollbacks: int = 0
    harmful_kept: int = 0
    control_improvements: int = 0
    false_alarms: int = 0  # insights on a control after its onset
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def window(series: list[tuple[float, float, float, float]], metric: str, start: float, end: float) -> float | None:
    i = METRICS.index(metric) + 1
    return _mean([row[i] for row in series if start <= row[0] < end])


def within(metric: str, value: float, pre: float, margin: float, margin_abs: float) -> bool:
    """Back within the margin of the pre-fault level, judged in the metric's bad direction only."""
    allowed = max(margin * abs(pre), margin_abs)
    return (pre - value if metric == "throughput" else value - pre) <= allowed


def harmful(with_change: dict[str, float], without_change: dict[str, float]) -> list[str]:
    """How a kept change hurts, comparing the same moment with and without it (empty: not harmful)."""
    out: list[str] = []
    w, wo = with_change, without_change
    if "latency" in w and "latency" in wo and w["latency"] > wo["latency"] * (1 + HARM_LATENCY) + 0.5:
        out.append(f"latency {wo['latency']:.1f} → {w['latency']:.1f} ms")
    if "error_rate" in w and "error_rate" in wo and \
            w["error_rate"] > wo["error_rate"] + max(HARM_ERROR_PP, HARM_LATENCY * wo["error_rate"]):
        out.append(f"error rate {wo['error_rate']:.2f} → {w['error_rate']:.2f} %")
    if "throughput" in w and "throughput" in wo and w["throughput"] < wo["throughput"] * (1 - HARM_THROUGHPUT):
        out.append(f"throughput {wo['throughput']:.1f} → {w['throughput']:.1f} req/s")
    return out


def _direction(change: dict[str, Any]) -> str:
    old, new = change.get("old"), change.get("new")
    if isinstance(new, bool):
        return "on" if new else "off"
    try:
        return "up" if float(new) > float(old if old is not None else 0.0) else "down"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"


def score_case(rec: CaseRecord) -> CaseScore:
    o = rec.oracle
    s = CaseScore(rec.name, o.fault, o.fixable, top_component=rec.top_component)
    s.improvements = len(rec.improvements)
    kept = [i for i in rec.improvements if i.status == "completed"]
    s.kept = len(kept)
    s.rollbacks = sum(1 for i in rec.improvements if i.status == "rolled_back")
    for imp in kept:
        why = harmful(imp.with_change, imp.without_change)
        if why:
            s.harmful_kept += 1
            s.notes.append(f"harmful kept {imp.improvement_id} on {imp.component}: {'; '.join(why)}")
    after_onset = [i for i in rec.insights if i[0] >= 0]
    if not o.fault:
        s.control_improvements = len(rec.improvements)
        s.false_alarms = len(after_onset)
        return s
    assert o.component is not None and o.metric is not None
    hits = sorted(t for t, comp, _ in after_onset if comp == o.component)
    s.detected = bool(hits)
    s.time_to_detect = round(hits[0], 1) if hits else None
    s.localized = rec.top_component == o.component
    series = rec.series.get(o.component, [])
    pre = window(series, o.metric, -PRE_WINDOW, 0.0)
    s.pre_fault = None if pre is None else round(pre, 3)
    faulted = window(series, o.metric, 10.0, 30.0)
    s.faulted = None if faulted is None else round(faulted, 3)
    final = window(series, o.metric, rec.end - AFTER_WINDOW, rec.end + 1)
    s.final = None if final is None else round(final, 3)
    if not o.fixable:
        return s
    margin_abs = o.margin_abs if o.margin_abs is not None else DEFAULT_MARGIN_ABS[o.metric]
    on_comp = sorted((i for i in kept if i.component == o.component and i.verdict_at is not None),
                     key=lambda i: i.verdict_at or 0.0)
    for imp in on_comp:
        assert imp.verdict_at is not None
        after = window(series, o.metric, imp.verdict_at, imp.verdict_at + AFTER_WINDOW)
        if after is not None and pre is not None and within(o.metric, after, pre, o.margin, margin_abs):
            s.time_to_mitigate = round(imp.verdict_at, 1)
            break
    ended_ok = final is not None and pre is not None and within(o.metric, final, pre, o.margin, margin_abs)
    s.mitigated = bool(on_comp) and ended_ok and s.time_to_mitigate is not None
    if not s.mitigated:
        s.time_to_mitigate = None
    wanted = {(f.knob, f.direction) for f in o.fix}
    made = {(c.get("parameter"), _direction(c)) for i in on_comp for c in i.changes}
    s.right_knob = bool(on_comp) and wanted <= made
    return s


def _rate(flags: list[bool | None]) -> float | None:
    vals = [bool(f) for f in flags if f is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    pos = (len(ys) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ys) - 1)
    return round(ys[lo] + (ys[hi] - ys[lo]) * (pos - lo), 1)


def totals(scores: list[CaseScore]) -> dict[str, Any]:
    """Rates over the library: detection and localization over fault cases, mitigation over fixable ones."""
    faults = [s for s in scores if s.fault]
    fixable = [s for s in faults if s.fixable]
    controls = [s for s in scores if not s.fault]
    ttd = [s.time_to_detect for s in faults if s.time_to_detect is not None]
    ttm = [s.time_to_mitigate for s in fixable if s.time_to_mitigate is not None]
    return {
        "cases": len(scores), "fault_cases": len(faults), "mitigable_cases": len(fixable), "controls": len(controls),
        "detection_rate": _rate([s.detected for s in faults]),
        "localization_rate": _rate([s.localized for s in faults]),
        "mitigation_rate": _rate([s.mitigated for s in fixable]),
        "right_knob_rate": _rate([s.right_knob for s in fixable]),
        "time_to_detect_s": {"p50": _pct(ttd, 0.5), "p90": _pct(ttd, 0.9), "max": _pct(ttd, 1.0)},
        "time_to_mitigate_s": {"p50": _pct(ttm, 0.5), "p90": _pct(ttm, 0.9), "max": _pct(ttm, 1.0)},
        "improvements": sum(s.improvements for s in scores),
        "rollbacks": sum(s.rollbacks for s in scores),
        "harmful_kept": sum(s.harmful_kept for s in scores),
        "control_improvements": sum(s.control_improvements for s in controls),
        "control_false_alarms": sum(s.false_alarms for s in controls),
    }
