"""Executions one at a time → trigger observations and alert baselines, per (tenant, skill) (pure)."""

from __future__ import annotations

from collections import defaultdict, deque
from datetime import datetime, timedelta
from typing import Any

from agents.healing.logic.effects import KAIZEN_TENANT
from agents.healing.logic.execution_metrics import (
    Baseline,
    ExecutionMetrics,
    calculate_cost,
    compute_baselines,
)
from agents.healing.logic.healing import Observation

__all__ = ["ExecutionObserver", "kaizen_execution"]


class ExecutionObserver:
    """The streaming form of observations_from_executions: error rate over the skill's last
    `error_window` executions (once 5 are seen), baselines (token and duration ratios, alert thresholds)
    over its last `history` executions once `min_baseline` are seen, the current one excluded."""

    def __init__(self, history: int = 200, min_baseline: int = 20, error_window: int = 20) -> None:
        self.min_baseline = min_baseline
        self._hist: dict[tuple[str, str], deque[ExecutionMetrics]] = defaultdict(lambda: deque(maxlen=history))
        self._errors: dict[tuple[str, str], deque[bool]] = defaultdict(lambda: deque(maxlen=error_window))

    def baseline(self, tenant_id: str, skill: str) -> Baseline | None:
        hist = self._hist.get((tenant_id, skill))
        if hist is None or len(hist) < self.min_baseline:
            return None
        return compute_baselines(hist).get(skill)

    def observe(self, em: ExecutionMetrics) -> tuple[Observation, Baseline | None]:
        key = (em.tenant_id, em.skill_name)
        base = self.baseline(*key)
        win = self._errors[key]
        win.append(not em.execution_succeeded)
        self._hist[key].append(em)
        obs = Observation(
            component=em.skill_name, tenant_id=em.tenant_id, timestamp=em.timestamp_end,
            duration_s=em.total_latency_ms / 1000.0, retries=float(em.retries),
            error_rate=(sum(win) / len(win)) if len(win) >= 5 else None,
            tokens=float(em.tokens_used) if em.tokens_used else None,
            baseline_tokens=base.avg_tokens_per_execution if base and base.avg_tokens_per_execution > 0 else None,
            cost_usd=em.cost_usd, test_failure_rate=em.test_failure_rate,
            baseline_duration_s=base.latency_p50_ms / 1000.0 if base and base.latency_p50_ms > 0 else None,
            source="execution_metrics", ref=em.execution_id)
        return obs, base


def kaizen_execution(skill: str, started: datetime, ended: datetime, ok: bool, *, execution_id: str,
                     tokens_input: int = 0, tokens_output: int = 0, cost_usd: float | None = None,
                     model: str | None = None, retries: int = 0, error: str | None = None,
                     detail: dict[str, Any] | None = None) -> ExecutionMetrics:
    """One of kaizen's own executions (an LLM call, an improvement step, a connector poll) as
    ExecutionMetrics of tenant "kaizen" (see docs/healing.md). Cost: the one given, else from the
    model's price (0 for unpriced or non-LLM work)."""
    if cost_usd is None:
        try:
            cost_usd = calculate_cost(model, tokens_input, tokens_output)
        except KeyError:
            cost_usd = 0.0
    latency = max(0, int((ended - started) / timedelta(milliseconds=1)))
    return ExecutionMetrics(
        execution_id=execution_id, skill_name=skill, timestamp_start=started, timestamp_end=ended,
        operator="kaizen", environment="kaizen", execution_succeeded=ok, execution_failed=not ok,
        error_reason=error, total_latency_ms=latency, wall_clock_time_ms=latency,
        tokens_used=tokens_input + tokens_output, tokens_input=tokens_input, tokens_output=tokens_output,
        cost_usd=cost_usd, tenant_id=KAIZEN_TENANT, model=model, retries=retries,
        decision_made=None if detail is None else str(detail)[:200])
