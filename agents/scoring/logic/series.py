"""One metric series' live model: detector + trend tracker + recent points, and its insights."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, KaizenDetector
from agents.scoring.logic.models import (
    DEFAULT_CHECKPOINT_MAX_BYTES,
    RiverScorer,
    new_scorer,
    restore_scorer,
    scorer_state,
)
from agents.scoring.logic.trends import TrendFinding, TrendTracker, classify_metric
from agents.scoring.logic.vectorised import ColumnSlot, DetectorColumns
from streams.records import MetricDataPoint, TelemetryInsight

RECENT = 60  # recent (ts, value, score) kept per series for the dashboard and the read model
# A trend incident within this many points after the detector's alarm is that same incident.
INCIDENT_POINTS = 100
_HEAD = struct.Struct("<II")


class SeriesModel:
    """Scores then learns each point; knows when it is due for a checkpoint."""

    __slots__ = ("metric_name", "spec", "detector", "trend", "recent", "last_score", "since_cp", "cp_at",
                 "since_alarm")

    def __init__(self, metric_name: str, detector: KaizenDetector | RiverScorer | ColumnSlot, trend: TrendTracker,
                 spec: str = "kaizen") -> None:
        self.metric_name = metric_name
        self.spec = spec
        self.detector = detector
        self.trend = trend
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=RECENT)
        self.last_score = 0.0
        self.since_cp = 0
        self.cp_at = 0.0
        self.since_alarm = INCIDENT_POINTS  # points since this series' last anomaly insight

    @classmethod
    def new(cls, metric_name: str, spec: str = "kaizen") -> SeriesModel:
        """A fresh model; `spec` is the detector chosen for the series (registry name or River expression)."""
        return cls(metric_name, new_scorer(spec), TrendTracker.for_metric(metric_name), spec)

    def observe(self, ts: float, value: float, history: bool = False) -> tuple[float, list[TrendFinding]]:
        """Score then learn one point. A history point (read back when the series was discovered) is
        learnt the same way, but its trend findings are dropped: history makes no insight."""
        score = self.detector.score_learn(ts, value)
        return self.observe_scored(ts, value, score, self.detector.surprise, history)

    def observe_scored(self, ts: float, value: float, score: float, surprise: float,
                       history: bool = False) -> tuple[float, list[TrendFinding]]:
        """observe() of a point its detector already scored (`score`, and `surprise` after it): the
        columnar path scores the points of every series of a message at once (vectorised.py)."""
        findings = self.trend.observe(ts, value, surprise)
        if score >= ANOMALY_THRESHOLD:
            self.since_alarm = 0
        elif self.since_alarm < INCIDENT_POINTS:
            self.since_alarm += 1
            findings = []   # the incident the detector reported already: one insight per incident
        if history:
            findings = []
        self.last_score = score
        self.since_cp += 1
        self.recent.append((ts, value, score))
        return score, findings

    def due_checkpoint(self, now: float, every_points: int, every_seconds: float) -> bool:
        return self.since_cp >= every_points or (self.since_cp > 0 and now - self.cp_at >= every_seconds)

    def checkpoint(self, now: float, max_bytes: int = DEFAULT_CHECKPOINT_MAX_BYTES) -> bytes:
        """Raises models.CheckpointTooLarge for a River model over `max_bytes`."""
        self.since_cp = 0
        self.cp_at = now
        d = scorer_state(self.detector, max_bytes)
        t = self.trend.to_state()
        return _HEAD.pack(len(d), len(t)) + d + t

    @classmethod
    def restore(cls, metric_name: str, data: bytes, spec: str = "kaizen") -> SeriesModel:
        nd, nt = _HEAD.unpack_from(data, 0)
        off = _HEAD.size
        det = restore_scorer(data[off:off + nd], spec)
        kind = classify_metric(metric_name)
        base = TrendTracker.for_metric(metric_name)
        trend = TrendTracker.from_state(data[off + nd:off + nd + nt], kind, None, base.error_unit)
        return cls(metric_name, det, trend, spec)

    def summary(self, key: str, last: Mapping[str, Any]) -> dict[str, Any]:
        """The series for the dashboard and the read model; `last` is its newest point (a lean point,
        see streams/metric_codec.py)."""
        pts = [[t, v, round(s, 4)] for t, v, s in self.recent]
        return {"series": key, "tenant_id": last["tenant_id"], "metric_name": last["metric_name"],
                "namespace": last["namespace"], "component": last["component"], "dimensions": last["dimensions"],
                "statistic": last["statistic"], "last_score": round(self.last_score, 4), "points": pts}


def observe_groups(cols: DetectorColumns, groups: Sequence[tuple[SeriesModel, Sequence[Mapping[str, Any]]]]
                   ) -> tuple[list[float], dict[int, list[TrendFinding]]]:
    """SeriesModel.observe of each group's points (each group one series, its points in time order),
    with the detectors of kaizen-scored series as rows of `cols` (adopted on first sight), all their
    points scored in one columnar call; series of another River model are scored per point. Returns the
    points' scores, group after group, and the trend findings of the few points that have some (by the
    same index): no container per point, so the garbage collector is not woken by the batch."""
    flat: list[Mapping[str, Any]] = []
    slots: list[int] = []
    counts: list[int] = []
    columnar: list[bool] = []
    for model, pts in groups:
        det = model.detector
        if type(det) is KaizenDetector and det.params == cols.params:
            det = model.detector = ColumnSlot.adopt(cols, det)
        if isinstance(det, ColumnSlot) and det.cols is cols:
            columnar.append(True)
            slots.append(det.slot)
            counts.append(len(pts))
            flat += pts
        else:
            columnar.append(False)
    col_scores: list[float] = []
    surprises: list[float] = []
    if flat:
        rows = np.array(slots, np.int64)
        if len(rows) != len(flat):
            rows = np.repeat(rows, counts)
        sc, su = cols.score_learn_batch(rows, np.array([p["timestamp"] for p in flat], np.float64),
                                        np.array([p["value"] for p in flat], np.float64))
        col_scores, surprises = sc.tolist(), su.tolist()
    scores: list[float] = []
    found: dict[int, list[TrendFinding]] = {}
    i = 0   # index into the columnar scores
    for (model, pts), col in zip(groups, columnar, strict=True):
        if col:
            scored = model.observe_scored
            for p in pts:
                score, findings = scored(p["timestamp"], p["value"], col_scores[i], surprises[i], bool(p.get("history")))
                i += 1
                if findings:
                    found[len(scores)] = findings
                scores.append(score)
        else:
            observe = model.observe
            for p in pts:
                score, findings = observe(p["timestamp"], p["value"], bool(p.get("history")))
                if findings:
                    found[len(scores)] = findings
                scores.append(score)
    return scores, found


def _severity(score: float) -> str:
    if score >= 0.95:
        return "critical"
    if score >= 0.85:
        return "high"
    if score >= 0.7:
        return "medium"
    return "low"


def anomaly_insight(p: MetricDataPoint, score: float, model: SeriesModel, now: float) -> TelemetryInsight:
    """An anomaly finding of the detector (score ≥ ANOMALY_THRESHOLD)."""
    kind = classify_metric(p.metric_name)
    base, _cur = model.trend.windows()
    baseline = sum(base) / len(base) if base else p.value
    change = (p.value - baseline) / abs(baseline) * 100 if baseline else 0.0
    problem = kind if kind != "other" else "anomaly"
    return TelemetryInsight(
        insight_type="anomaly", severity=_severity(score), affected_component=p.component(),  # type: ignore[arg-type]
        affected_tenants=[p.tenant_id], tenant_id=p.tenant_id, source="scoring", metric_name=p.metric_name,
        problem_type=problem, confidence_score=round(min(1.0, max(0.0, score)), 4),
        metrics={"value": p.value, "baseline": baseline, "anomaly_score": score, "change_pct": change},
        description=f"{p.metric_name} of {p.component()} is anomalous: {p.value:g} vs baseline {baseline:g} "
                    f"(score {score:.2f})",
        recommended_action=f"investigate {kind} of {p.component()}",
        timestamp=datetime.fromtimestamp(p.timestamp.timestamp(), UTC),
        evidence={"series": p.series_key(), "threshold": ANOMALY_THRESHOLD, "detected_at": now,
                  "detector": model.spec,
                  "namespace": p.namespace, "dimensions": p.dimensions},
    )


_RULE_PROBLEM = {"latency_increase": "latency", "error_rate_increase": "error_rate",
                 "high_utilization": "utilization", "throughput_drop": "throughput"}


def trend_insight(p: MetricDataPoint, f: TrendFinding, model: SeriesModel, now: float) -> TelemetryInsight:
    """A performance-degradation finding of the trend rules (docs/formulas.md)."""
    kind = classify_metric(p.metric_name)
    problem = _RULE_PROBLEM.get(f.rule, kind if kind != "other" else "performance")
    return TelemetryInsight(
        insight_type="performance_degradation", severity=f.severity,  # type: ignore[arg-type]
        affected_component=p.component(), affected_tenants=[p.tenant_id], tenant_id=p.tenant_id,
        source="trends", metric_name=p.metric_name, problem_type=problem, confidence_score=0.8,
        metrics={"baseline": f.baseline, "current": f.current, "change_pct": f.change_pct, "value": p.value},
        description=f"{f.rule.replace('_', ' ')}: {p.metric_name} of {p.component()} {f.baseline:g} → "
                    f"{f.current:g} ({f.change_pct:+.1f} %)",
        recommended_action=f"tune {p.component()} to restore {kind}",
        timestamp=datetime.fromtimestamp(p.timestamp.timestamp(), UTC),
        evidence={"series": p.series_key(), "rule": f.rule, "detected_at": now},
    )
