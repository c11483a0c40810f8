"""Monitoring verdicts: baselines, the degradation formula (docs/formulas.md), keep/rollback decisions, reports."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from streams.records import CycleReport, ImprovementExecution
from streams.units import canonical, fraction

Decision = Literal["keep", "rollback", "inconclusive", "continue"]

# Metric names (CloudWatch's and kaizen's) mapped to the three signals the verdict watches.
LATENCY_METRICS = frozenset({"ResponseLatency", "Latency", "latency", "latency_ms", "Duration", "ResponseTime"})
ERROR_RATE_METRICS = frozenset({"ErrorRate", "error_rate", "ErrorRatio"})
THROUGHPUT_METRICS = frozenset({"RequestCount", "Invocations", "Throughput", "throughput", "Requests"})


class NamedValue(Protocol):
    """What a window needs of a point: a MetricDataPoint, or a sample of the workers' metrics tap
    (either may also have a `unit`; without one a value is read as unit-less)."""

    @property
    def metric_name(self) -> str: ...

    @property
    def value(self) -> float: ...


@dataclass
class MetricWindow:
    """Samples of one component in one time window: latencies (ms), error rates (fractions 0..1, whatever
    unit the point came in: see streams/units.py), throughputs."""

    latency: list[float] = field(default_factory=list)
    error_rate: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)

    def add(self, point: NamedValue) -> bool:
        """Add a metric point if it is one of the watched signals; returns whether it was used."""
        if point.metric_name in LATENCY_METRICS:
            self.latency.append(point.value)
        elif point.metric_name in ERROR_RATE_METRICS:
            self.error_rate.append(fraction(*canonical(point.metric_name, point.value,
                                                       str(getattr(point, "unit", "None")))))
        elif point.metric_name in THROUGHPUT_METRICS:
            self.throughput.append(point.value)
        else:
            return False
        return True

    @classmethod
    def from_points(cls, points: Iterable[NamedValue]) -> MetricWindow:
        window = cls()
        for p in points:
            window.add(p)
        return window

    def size(self) -> int:
        """The number of evaluation samples: the best-covered signal."""
        return max(len(self.latency), len(self.error_rate), len(self.throughput))

    def comparable_size(self, baseline: dict[str, float]) -> int:
        """The number of samples that can be compared with `baseline`: the best-covered signal the baseline
        has too (a signal missing on one side adds nothing to the degradation, so it is no evidence)."""
        sizes = [len(xs) for key, xs in (("latency_p95", self.latency), ("error_rate", self.error_rate),
                                         ("throughput", self.throughput)) if key in baseline]
        return max(sizes, default=0)

    def halves(self) -> tuple[MetricWindow, MetricWindow]:
        """Older and newer half of each signal (for the persistence check)."""
        def split(xs: list[float]) -> tuple[list[float], list[float]]:
            mid = len(xs) // 2
            return xs[:mid], xs[mid:]
        la, lb = split(self.latency)
        ea, eb = split(self.error_rate)
        ta, tb = split(self.throughput)
        return MetricWindow(la, ea, ta), MetricWindow(lb, eb, tb)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def summarize(window: MetricWindow) -> dict[str, float]:
    """The baseline metrics (docs/formulas.md): latency p50/p95/p99, error rate and throughput."""
    out: dict[str, float] = {"samples": float(window.size())}
    if window.latency:
        out.update(latency_p50=percentile(window.latency, 50), latency_p95=percentile(window.latency, 95),
                   latency_p99=percentile(window.latency, 99))
    if window.error_rate:
        out["error_rate"] = _mean(window.error_rate)
    if window.throughput:
        out["throughput"] = _mean(window.throughput)
    return out


baseline_from = summarize  # a baseline is the summary of the pre-deploy window


def calculate_degradation(baseline: dict[str, float], current: dict[str, float]) -> float:
    """The improvement-cycle manual's formula (§5.3), exactly; signals missing on either side are skipped."""
    degradations: list[float] = []
    if "latency_p95" in current and "latency_p95" in baseline and baseline["latency_p95"] > 0:
        if current["latency_p95"] > baseline["latency_p95"]:
            degradations.append((current["latency_p95"] - baseline["latency_p95"]) / baseline["latency_p95"])
    if "error_rate" in current and "error_rate" in baseline:
        if current["error_rate"] > baseline["error_rate"]:
            degradations.append(
                (current["error_rate"] - baseline["error_rate"]) / max(baseline["error_rate"], 0.01)
            )
    if "throughput" in current and "throughput" in baseline and baseline["throughput"] > 0:
        if current["throughput"] < baseline["throughput"]:
            degradations.append((baseline["throughput"] - current["throughput"]) / baseline["throughput"])
    return max(degradations) if degradations else 0.0


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    degradation: float
    reason: str
    current: dict[str, float] = field(default_factory=dict)


def judge(
    baseline: dict[str, float],
    samples_since_deploy: MetricWindow,
    threshold: float = 0.10,
    min_samples: int = 5,
    final: bool = False,
) -> Verdict:
    """Decide after each new sample (continuous checks, not one-minute polls).

    - fewer than `min_samples` samples of a signal the baseline has too: "continue" (or "inconclusive"
      when `final`): never guess, and never keep a change on samples that cannot be compared;
    - degradation above `threshold` over the whole window AND in its newer half (a persistent
      regression, not one spike): "rollback";
    - above threshold overall but not confirmed by the newer half (noisy): "continue" while the
      monitoring period runs, "inconclusive" at its end;
    - at or below threshold: "continue", and "keep" when `final`.
    """
    n = samples_since_deploy.comparable_size(baseline)
    if n < min_samples:
        decision: Decision = "inconclusive" if final else "continue"
        return Verdict(decision, 0.0, f"{n} samples since deploy comparable with the baseline, need {min_samples}")
    current = summarize(samples_since_deploy)
    degradation = calculate_degradation(baseline, current)
    if degradation > threshold:
        _, newer = samples_since_deploy.halves()
        recent = calculate_degradation(baseline, summarize(newer))
        if recent > threshold:
            return Verdict("rollback", degradation,
                           f"degradation {degradation:.1%} (recent {recent:.1%}) > threshold {threshold:.1%}", current)
        decision = "inconclusive" if final else "continue"
        return Verdict(decision, degradation,
                       f"degradation {degradation:.1%} not persistent (recent {recent:.1%}): too noisy", current)
    if final:
        return Verdict("keep", degradation, f"degradation {degradation:.1%} <= threshold {threshold:.1%}", current)
    return Verdict("continue", degradation, f"degradation {degradation:.1%} within threshold so far", current)


def assess_impact(
    improvement_id: str,
    rolled_back: bool,
    baseline: dict[str, float],
    final: dict[str, float],
    execution_time_seconds: float,
    llm_tokens: int = 0,
    llm_cost_usd: float = 0.0,
    cloudwatch_api_calls: int = 0,
) -> dict[str, Any]:
    """Impact assessment of the manual's §6.1."""
    b95, f95 = baseline.get("latency_p95", 0.0), final.get("latency_p95", 0.0)
    return {
        "improvement_id": improvement_id,
        "status": "rolled_back" if rolled_back else "completed",
        "metrics": {
            "baseline": dict(baseline),
            "final": dict(final),
            "improvement": {
                "latency_reduction_ms": b95 - f95,
                "latency_reduction_pct": ((b95 - f95) / b95) * 100 if b95 else 0.0,
                "error_rate_change": final.get("error_rate", 0.0) - baseline.get("error_rate", 0.0),
                "throughput_change": final.get("throughput", 0.0) - baseline.get("throughput", 0.0),
            },
        },
        "execution_time_seconds": execution_time_seconds,
        "cost": {"llm_tokens": llm_tokens, "llm_cost_usd": llm_cost_usd, "cloudwatch_api_calls": cloudwatch_api_calls},
    }


DEPLOYED_STATUSES = frozenset({"deploying", "monitoring", "completed"})


def build_cycle_report(
    cycle_id: str,
    kind: Literal["scheduled", "manual", "emergency"],
    start_time: datetime,
    end_time: datetime,
    executions: Sequence[ImprovementExecution],
    telemetry_analyzed: dict[str, int] | None = None,
    opportunities_identified: int = 0,
    assessments: Sequence[dict[str, Any]] = (),
    tenant_id: str | None = None,
) -> CycleReport:
    """The cycle report of §6.3.  'deployed' = deployed and not rolled back (deploying, monitoring,
    completed); total_impact sums those improvements' opportunity impact scores."""
    deployed = [e for e in executions if e.status in DEPLOYED_STATUSES]
    return CycleReport(
        cycle_id=cycle_id,
        kind=kind,
        start_time=start_time,
        end_time=end_time,
        duration_seconds=(end_time - start_time).total_seconds(),
        tenant_id=tenant_id,
        telemetry_analyzed=dict(telemetry_analyzed or {"metrics": 0, "logs": 0, "events": 0}),
        opportunities_identified=opportunities_identified,
        improvements_attempted=len(executions),
        improvements_deployed=len(deployed),
        improvements_rolled_back=sum(1 for e in executions if e.status == "rolled_back"),
        total_impact=sum(e.opportunity.impact_score for e in deployed if e.opportunity is not None),
        improvements=list(assessments),
    )
