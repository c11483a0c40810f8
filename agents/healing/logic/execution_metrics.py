"""ExecutionMetrics (docs/healing.md): cost, free-tier quota, baselines, z-score anomaly, telemetry (pure)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from statistics import NormalDist, fmean, pstdev
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from streams.records import MetricDataPoint, Severity, TelemetryInsight, derive_event_id

__all__ = [
    "ANOMALY_THRESHOLD",
    "PRICING_PER_1K",
    "AnomalyScore",
    "Baseline",
    "ExecutionMetrics",
    "QuotaStatus",
    "calculate_cost",
    "compute_baselines",
    "cost_tier_for",
    "detect_anomaly",
    "percentile",
    "quota_status",
    "to_insights",
    "to_metric_points",
    "track_free_tier_quota",
]

CostTier = Literal["Free", "Standard", "Premium"]
WarningLevel = Literal["GREEN", "YELLOW", "RED"]
ANOMALY_THRESHOLD = 3.0
NAMESPACE = "kaizen/ExecutionMetrics"

# USD per 1000 tokens (input, output) and tier. Published list prices give gpt-4 per token (0.00003/0.00006)
# and gpt-3.5-turbo per 1K (0.0005/0.0015); both are normalised here to the vendors' per-1K prices.
PRICING_PER_1K: dict[str, tuple[float, float, CostTier]] = {
    "gpt-4": (0.03, 0.06, "Premium"),
    "gpt-4-turbo": (0.01, 0.03, "Premium"),
    "gpt-4o": (0.005, 0.015, "Standard"),
    "gpt-4o-mini": (0.00015, 0.0006, "Standard"),
    "gpt-3.5-turbo": (0.0005, 0.0015, "Standard"),
    "anthropic.claude-v2": (0.008, 0.024, "Premium"),
    "anthropic.claude-3-sonnet": (0.003, 0.015, "Standard"),
    "anthropic.claude-3-haiku": (0.00025, 0.00125, "Standard"),
    "amazon.titan-text-express-v1": (0.0002, 0.0006, "Standard"),
}


class ExecutionMetrics(BaseModel):
    """Metrics captured for every skill execution (docs/healing.md), plus kaizen's routing fields."""

    model_config = ConfigDict(extra="ignore")

    # Execution identity
    execution_id: str
    skill_name: str
    skill_version: str = "0"
    orchestrator_version: str = "0"
    timestamp_start: datetime
    timestamp_end: datetime
    operator: str = "human"
    environment: str = "local"
    # Reliability
    execution_succeeded: bool
    execution_failed: bool = False
    error_category: str | None = None  # Security, Auth, Network, Timeout, Logic
    error_code: int | None = None
    error_reason: str | None = None
    # Performance
    total_latency_ms: int
    wall_clock_time_ms: int = 0
    # Cost
    tokens_used: int = 0
    tokens_input: int = 0
    tokens_output: int = 0
    cost_usd: float = 0.0
    cost_tier: str = "Free"
    # Quota tracking
    free_tier_quota_used_today: int = 0
    free_tier_quota_remaining: int = 0
    free_tier_quota_pct_used: float = 0.0
    # Quality
    output_correct: bool = True
    confidence_score: float = 1.0
    decision_made: str | None = None
    # Metadata
    input_hash: str = ""
    output_hash: str = ""
    skill_path_in_dag: str = ""
    # kaizen additions (optional): routing to tenants and the self-healing / alert inputs
    tenant_id: str = "default"
    model: str | None = None
    retries: int = 0
    test_failure_rate: float | None = None
    fingerprint: str | None = None
    expected_fingerprint: str | None = None

    def to_json(self) -> str:
        """One JSONL line."""
        return orjson.dumps(self.model_dump(mode="json")).decode()


def cost_tier_for(model: str | None, free_tier: bool = False) -> CostTier:
    """Free for free-tier and non-LLM executions, else the model's tier (unknown models: Standard)."""
    if free_tier or not model:
        return "Free"
    return PRICING_PER_1K.get(model, (0.0, 0.0, "Standard"))[2]


def calculate_cost(model: str | None, tokens_input: int, tokens_output: int, free_tier: bool = False) -> float:
    """USD cost of one call, rounded to 8 places; free tier and non-LLM skills cost 0.

    Raises KeyError for an unknown priced model so a missing price is noticed, not billed as 0.
    """
    if free_tier or not model:
        return 0.0
    if model not in PRICING_PER_1K:
        raise KeyError(f"no price for model {model!r}; add it to PRICING_PER_1K")
    inp, out, _ = PRICING_PER_1K[model]
    return round(tokens_input * inp / 1000.0 + tokens_output * out / 1000.0, 8)


class QuotaStatus(BaseModel):
    """Free-tier quota of one external API for one day."""

    api: str
    limit: int
    used: int
    remaining: int
    pct_used: float
    warning_level: WarningLevel
    hours_until_reset: float


def _level(pct: float) -> WarningLevel:
    return "RED" if pct > 80.0 else "YELLOW" if pct > 50.0 else "GREEN"


def quota_status(api: str, used: int, limit: int, now: datetime) -> QuotaStatus:
    """GREEN, YELLOW above 50 %, RED above 80 %; the quota resets at the next UTC midnight."""
    pct = 100.0 if limit <= 0 else 100.0 * used / limit
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return QuotaStatus(
        api=api, limit=limit, used=used, remaining=max(0, limit - used), pct_used=round(pct, 3),
        warning_level=_level(pct), hours_until_reset=round((midnight - now).total_seconds() / 3600.0, 3),
    )


def track_free_tier_quota(
    usage: Mapping[str, int], limits: Mapping[str, int], now: datetime
) -> tuple[dict[str, QuotaStatus], WarningLevel]:
    """Status per API and the worst warning level over all of them."""
    statuses = {api: quota_status(api, usage.get(api, 0), limit, now) for api, limit in limits.items()}
    order = {"GREEN": 0, "YELLOW": 1, "RED": 2}
    worst: WarningLevel = max((s.warning_level for s in statuses.values()), key=order.__getitem__, default="GREEN")
    return statuses, worst


class Baseline(BaseModel):
    """Per-skill baseline (docs/healing.md) with the spreads the anomaly z-scores need."""

    skill: str
    period_start: datetime
    period_end: datetime
    sample_size: int
    success_rate: float
    success_std_dev: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    latency_std_dev_ms: float
    latency_sample: list[float] = Field(default_factory=list)  # sorted, at most 1000 values
    avg_tokens_per_execution: float
    avg_cost_per_execution: float
    cost_std_dev: float
    quota_rate_mean: float = 0.0
    quota_rate_std_dev: float = 0.0
    avg_retries: float = 0.0
    cost_tier_breakdown: dict[str, int] = Field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if not sorted_values:
        raise ValueError("percentile of an empty sample")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _thin(values: list[float], keep: int = 1000) -> list[float]:
    if len(values) <= keep:
        return values
    step = (len(values) - 1) / (keep - 1)
    return [values[round(i * step)] for i in range(keep)]


def compute_baselines(
    records: Iterable[ExecutionMetrics], window_days: float | None = None, now: datetime | None = None
) -> dict[str, Baseline]:
    """Baselines per skill over all records, or over the last window_days before now."""
    by_skill: dict[str, list[ExecutionMetrics]] = defaultdict(list)
    since = now - timedelta(days=window_days) if (window_days is not None and now is not None) else None
    for rec in records:
        if since is None or (now is not None and since <= rec.timestamp_start <= now):
            by_skill[rec.skill_name].append(rec)
    out: dict[str, Baseline] = {}
    for skill, recs in by_skill.items():
        lat = sorted(float(r.total_latency_ms) for r in recs)
        succ = [1.0 if r.execution_succeeded else 0.0 for r in recs]
        cost = [r.cost_usd for r in recs]
        rates = [r.free_tier_quota_pct_used / r.tokens_used for r in recs if r.tokens_used > 0]
        tiers: dict[str, int] = defaultdict(int)
        for r in recs:
            tiers[r.cost_tier] += 1
        out[skill] = Baseline(
            skill=skill, period_start=min(r.timestamp_start for r in recs),
            period_end=max(r.timestamp_end for r in recs), sample_size=len(recs),
            success_rate=fmean(succ), success_std_dev=pstdev(succ),
            latency_p50_ms=percentile(lat, 50), latency_p95_ms=percentile(lat, 95),
            latency_p99_ms=percentile(lat, 99), latency_mean_ms=fmean(lat), latency_std_dev_ms=pstdev(lat),
            latency_sample=_thin(lat), avg_tokens_per_execution=fmean(r.tokens_used for r in recs),
            avg_cost_per_execution=fmean(cost), cost_std_dev=pstdev(cost),
            quota_rate_mean=fmean(rates) if rates else 0.0, quota_rate_std_dev=pstdev(rates) if rates else 0.0,
            avg_retries=fmean(r.retries for r in recs), cost_tier_breakdown=dict(tiers),
        )
    return out


class AnomalyScore(BaseModel):
    """Composite anomaly of one execution against its skill's baseline."""

    is_anomaly: bool
    score: float
    deviations: dict[str, float]
    dominant: str  # the deviation that gave the score: success | latency | cost | quota_rate


_NORMAL = NormalDist()
_MIN_SUCCESS_STD = 0.01  # a skill that never failed: one failure scores -100/z, not a division by zero


def _z(value: float, mean: float, std: float, floor: float) -> float:
    diff = value - mean
    return 0.0 if diff == 0 else diff / max(std, floor)


def latency_z(latency_ms: float, baseline: Baseline) -> tuple[float, float]:
    """(percentile of latency in the baseline sample, its upper-tail z-score).

    Inside the sample the empirical percentile is mapped through the normal quantile; beyond it the
    tail is extrapolated with the spread (p95 - p50) / 1.645, so a 10× slower run still scores high.
    """
    sample = baseline.latency_sample
    n = len(sample)
    if n == 0:
        return 0.0, 0.0
    below = sum(1 for v in sample if v < latency_ms) + 0.5 * sum(1 for v in sample if v == latency_ms)
    pct = min(max(below / n, 0.5 / n), 1.0 - 0.5 / n)
    z_emp = _NORMAL.inv_cdf(pct)
    spread = max((baseline.latency_p95_ms - baseline.latency_p50_ms) / 1.645, 1e-9, 0.01 * baseline.latency_p50_ms)
    z_tail = (latency_ms - baseline.latency_p50_ms) / spread
    return 100.0 * pct, max(z_emp, z_tail) if latency_ms > sample[-1] else z_emp


def detect_anomaly(execution: ExecutionMetrics, baseline: Baseline) -> AnomalyScore:
    """max(|success z|, latency percentile z, |cost z|, |quota-rate z|); anomaly when > 3.0 (docs/healing.md)."""
    success_z = _z(1.0 if execution.execution_succeeded else 0.0, baseline.success_rate,
                   baseline.success_std_dev, _MIN_SUCCESS_STD)
    lat_pct, lat_z = latency_z(float(execution.total_latency_ms), baseline)
    cost_z = _z(execution.cost_usd, baseline.avg_cost_per_execution, baseline.cost_std_dev,
                max(1e-6, 0.1 * baseline.avg_cost_per_execution))
    quota_z = 0.0
    if execution.tokens_used > 0 and baseline.quota_rate_mean > 0:
        rate = execution.free_tier_quota_pct_used / execution.tokens_used
        quota_z = _z(rate, baseline.quota_rate_mean, baseline.quota_rate_std_dev, 0.1 * baseline.quota_rate_mean)
    parts = {"success": abs(success_z), "latency": lat_z, "cost": abs(cost_z), "quota_rate": abs(quota_z)}
    dominant = max(parts, key=parts.__getitem__)
    score = parts[dominant]
    return AnomalyScore(
        is_anomaly=score > ANOMALY_THRESHOLD, score=score, dominant=dominant,
        deviations={"success_zscore": success_z, "latency_percentile": lat_pct, "latency_zscore": lat_z,
                    "cost_zscore": cost_z, "quota_rate_zscore": quota_z},
    )


def to_metric_points(em: ExecutionMetrics) -> list[MetricDataPoint]:
    """One execution as CloudWatch-shaped points (namespace kaizen/ExecutionMetrics, dimension skill)."""
    dims = {"skill": em.skill_name, "environment": em.environment}
    values: list[tuple[str, float, str]] = [
        ("Latency", float(em.total_latency_ms), "Milliseconds"),
        ("WallClockTime", float(em.wall_clock_time_ms), "Milliseconds"),
        ("ExecutionSucceeded", 1.0 if em.execution_succeeded else 0.0, "Count"),
        ("ExecutionFailed", 1.0 if (em.execution_failed or not em.execution_succeeded) else 0.0, "Count"),
        ("Retries", float(em.retries), "Count"),
        ("TokensUsed", float(em.tokens_used), "Count"),
        ("CostUSD", em.cost_usd, "None"),
        ("FreeTierQuotaPctUsed", em.free_tier_quota_pct_used, "Percent"),
        ("ConfidenceScore", em.confidence_score, "None"),
    ]
    return [
        MetricDataPoint(metric_name=name, value=value, unit=unit, dimensions=dims, timestamp=em.timestamp_end,
                        tenant_id=em.tenant_id, namespace=NAMESPACE, statistic="Sum" if unit == "Count" else "Average",
                        event_id=derive_event_id("metric", [em.execution_id, name]))
        for name, value, unit in values
    ]


_PROBLEM = {"success": "error_rate", "latency": "latency", "cost": "cost", "quota_rate": "quota"}


def _severity(score: float, failed: bool) -> Severity:
    if score > 2 * ANOMALY_THRESHOLD:
        return "critical" if failed else "high"
    return "high" if score > 1.5 * ANOMALY_THRESHOLD else "medium"


def to_insights(em: ExecutionMetrics, baseline: Baseline | None) -> list[TelemetryInsight]:
    """An anomaly insight (source execution_metrics) when the execution deviates from its baseline."""
    if baseline is None:
        return []
    score = detect_anomaly(em, baseline)
    if not score.is_anomaly:
        return []
    problem = _PROBLEM[score.dominant]
    current, base = {
        "success": (0.0 if em.execution_succeeded else 1.0, 1.0 - baseline.success_rate),
        "latency": (float(em.total_latency_ms), baseline.latency_p50_ms),
        "cost": (em.cost_usd, baseline.avg_cost_per_execution),
        "quota_rate": (em.free_tier_quota_pct_used, baseline.quota_rate_mean * max(em.tokens_used, 1)),
    }[score.dominant]
    return [TelemetryInsight(
        insight_type="anomaly", severity=_severity(score.score, not em.execution_succeeded),
        affected_component=em.skill_name, affected_tenants=[em.tenant_id], tenant_id=em.tenant_id,
        metrics={"current": current, "baseline": base, "anomaly_score": score.score, **score.deviations},
        description=f"{em.skill_name}: {problem} deviates from baseline (z={score.score:.1f})",
        recommended_action=f"investigate {problem} of {em.skill_name}",
        confidence_score=min(1.0, 0.5 + score.score / 12.0), timestamp=em.timestamp_end,
        source="execution_metrics", metric_name={"latency": "Latency", "error_rate": "ExecutionFailed",
                                                 "cost": "CostUSD", "quota": "FreeTierQuotaPctUsed"}[problem],
        problem_type=problem, evidence={"execution_id": em.execution_id, "dominant": score.dominant},
    )]
