"""The self-healing trigger framework: seven default triggers, eight actions, cooldown (pure)."""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, Field

from agents.healing.logic.execution_metrics import Baseline, ExecutionMetrics
from streams.records import MetricDataPoint

__all__ = [
    "COMPREHENSIVE",
    "DEFAULT_ACTIONS",
    "DEFAULT_TRIGGERS",
    "ActionPlan",
    "ActionRegistry",
    "ActionSpec",
    "HealingConfig",
    "HealingRecord",
    "Observation",
    "TriggerFiring",
    "TriggerFramework",
    "TriggerSpec",
    "cooldown_key",
    "DURATION_METRICS",
    "OBSERVED_METRICS",
    "durations_s",
    "firing_id",
    "metric_observation_columns",
    "metric_observation_fields",
    "observation_from_metric",
    "observations_from_executions",
]

TriggerType = Literal["bottleneck", "cost", "quality", "performance"]
Comparison = Literal["ge", "gt"]


class TriggerSpec(BaseModel):
    """One trigger of the default table (docs/healing.md): the observation field it watches and its threshold."""

    name: str
    type: TriggerType
    field: str  # Observation attribute, or "token_ratio" / "duration_ratio" (value ÷ baseline)
    threshold: float
    comparison: Comparison = "ge"
    target_agent: str
    description: str = ""
    enabled: bool = True


class ActionSpec(BaseModel):
    """One corrective action of the default table (docs/healing.md) and the triggers it answers."""

    name: str
    type: str
    priority: Literal["emergency", "critical", "high", "medium", "low"]
    target_agent: str
    triggers: list[str]
    change_hint: dict[str, Any] = {}  # for the kaizen planner: {"kind": timeout|cache|pool|...}
    enabled: bool = True


# Default triggers (docs/healing.md). "300% increase" is read as current ≥ 3.0 × baseline tokens, like
# duration_increase's "≥150% baseline" is current ≥ 1.5 × baseline duration (a ">50%" increase).
DEFAULT_TRIGGERS: tuple[TriggerSpec, ...] = (
    TriggerSpec(name="slow_tasks", type="bottleneck", field="duration_s", threshold=60.0,
                target_agent="ChiefArchitectAgent", description="task duration ≥ 60 s"),
    TriggerSpec(name="high_retry_rate", type="bottleneck", field="retries", threshold=3.0,
                target_agent="AuditorAgent", description="≥ 3 retry attempts"),
    TriggerSpec(name="high_error_rate", type="bottleneck", field="error_rate", threshold=0.20,
                target_agent="TestGeneratorAgent", description="error rate ≥ 20 %"),
    TriggerSpec(name="token_usage_spike", type="cost", field="token_ratio", threshold=3.0,
                target_agent="ChiefArchitectAgent", description="tokens ≥ 300 % of baseline"),
    TriggerSpec(name="cost_efficiency_degradation", type="cost", field="cost_usd", threshold=0.50,
                comparison="gt", target_agent="PlannerAgent", description="cost > $0.50 per task"),
    TriggerSpec(name="test_failure_spike", type="quality", field="test_failure_rate", threshold=0.05,
                comparison="gt", target_agent="TestGeneratorAgent", description="test failures > 5 %"),
    TriggerSpec(name="duration_increase", type="performance", field="duration_ratio", threshold=1.5,
                target_agent="AuditorAgent", description="duration ≥ 150 % of baseline"),
)

# Default actions (docs/healing.md); comprehensive_system_analysis answers several triggers at once.
DEFAULT_ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(name="analyze_slow_tasks", type="agent_handoff", priority="high",
               target_agent="ChiefArchitectAgent", triggers=["slow_tasks"], change_hint={"kind": "timeout"}),
    ActionSpec(name="resolve_retry_failures", type="quality_enforcement", priority="high",
               target_agent="AuditorAgent", triggers=["high_retry_rate"], change_hint={"kind": "retries"}),
    ActionSpec(name="handle_error_spike", type="emergency_shutdown", priority="emergency",
               target_agent="TestGeneratorAgent", triggers=["high_error_rate"],
               change_hint={"kind": "feature_flag"}),
    ActionSpec(name="optimize_token_usage", type="cost_optimization", priority="high",
               target_agent="ChiefArchitectAgent", triggers=["token_usage_spike"],
               change_hint={"kind": "routing"}),
    ActionSpec(name="adjust_cost_policies", type="configuration", priority="medium",
               target_agent="PlannerAgent", triggers=["cost_efficiency_degradation"],
               change_hint={"kind": "routing"}),
    ActionSpec(name="enforce_test_standards", type="quality_enforcement", priority="critical",
               target_agent="TestGeneratorAgent", triggers=["test_failure_spike"],
               change_hint={"kind": "feature_flag"}),
    ActionSpec(name="optimize_task_performance", type="performance", priority="high",
               target_agent="AuditorAgent", triggers=["duration_increase"], change_hint={"kind": "concurrency"}),
    ActionSpec(name="comprehensive_system_analysis", type="diagnostic", priority="medium",
               target_agent="ChiefArchitectAgent", triggers=[], change_hint={"kind": "diagnostic"}),
)


class HealingConfig(BaseModel):
    """Triggers, actions and cooldown; from a dict/JSON whose entries override the defaults by name.

    JSON shape: {"cooldown_seconds": 300, "comprehensive_min_triggers": 3,
                 "triggers": {"slow_tasks": {"threshold": 90}}, "actions": {"adjust_cost_policies": {"enabled": false}}}
    """

    cooldown_seconds: float = 300.0
    comprehensive_min_triggers: int = 3
    triggers: list[TriggerSpec] = Field(default_factory=lambda: [t.model_copy() for t in DEFAULT_TRIGGERS])
    actions: list[ActionSpec] = Field(default_factory=lambda: [a.model_copy() for a in DEFAULT_ACTIONS])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealingConfig:
        """Defaults overridden (or extended) by name; an unknown key raises ValueError naming it."""
        unknown = set(data) - {"cooldown_seconds", "comprehensive_min_triggers", "triggers", "actions"}
        if unknown:
            raise ValueError(f"unknown healing config keys {sorted(unknown)}")
        cfg = cls()
        if "cooldown_seconds" in data:
            cfg.cooldown_seconds = float(data["cooldown_seconds"])
        if "comprehensive_min_triggers" in data:
            cfg.comprehensive_min_triggers = int(data["comprehensive_min_triggers"])
        cfg.triggers = _merge(cfg.triggers, data.get("triggers", {}), TriggerSpec)
        cfg.actions = _merge(cfg.actions, data.get("actions", {}), ActionSpec)
        return cfg

    @classmethod
    def from_json(cls, text: str | bytes) -> HealingConfig:
        return cls.from_dict(orjson.loads(text))


_S = TypeVar("_S", TriggerSpec, ActionSpec)


def _merge(base: list[_S], overrides: Mapping[str, Mapping[str, Any]], model: type[_S]) -> list[_S]:
    by_name = {s.name: s for s in base}
    for name, fields in overrides.items():
        if name in by_name:
            by_name[name] = model.model_validate({**by_name[name].model_dump(), **fields})
        else:
            by_name[name] = model.model_validate({"name": name, **fields})
    return list(by_name.values())


class Observation(BaseModel):
    """What the triggers look at for one skill/component at one time; unknown values stay None."""

    component: str
    tenant_id: str = "default"
    timestamp: datetime
    duration_s: float | None = None
    retries: float | None = None
    error_rate: float | None = None  # fraction 0..1
    tokens: float | None = None
    baseline_tokens: float | None = None
    cost_usd: float | None = None  # per task
    test_failure_rate: float | None = None  # fraction 0..1
    baseline_duration_s: float | None = None
    source: str = "execution_metrics"
    ref: str = ""  # execution id / metric event id

    def value(self, name: str) -> float | None:
        """A watched field, with the two baseline ratios derived."""
        if name == "token_ratio":
            return _ratio(self.tokens, self.baseline_tokens)
        if name == "duration_ratio":
            return _ratio(self.duration_s, self.baseline_duration_s)
        raw = getattr(self, name, None)
        return None if raw is None else float(raw)


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base or base <= 0 else value / base


# The derived ratios the triggers may watch: (field, numerator field, baseline field).
_RATIOS = (("duration_ratio", "duration_s", "baseline_duration_s"), ("token_ratio", "tokens", "baseline_tokens"))


class TriggerFiring(BaseModel):
    """A trigger crossed its threshold: which, where, when, and the evidence."""

    firing_id: str
    trigger: str
    type: TriggerType
    target_agent: str
    component: str
    tenant_id: str
    timestamp: datetime
    value: float
    threshold: float
    evidence: dict[str, Any]


class ActionPlan(BaseModel):
    """A corrective action to run for a firing: the handoff context for its target agent."""

    action: str
    type: str
    priority: str
    target_agent: str
    trigger: str
    component: str
    tenant_id: str
    timestamp: datetime
    change_hint: dict[str, Any]
    handoff: dict[str, Any]
    firing_id: str = ""


class HealingRecord(BaseModel):
    """One line of the healing history: a firing, a planned action, or the effect kaizen gave it."""

    kind: Literal["trigger", "action", "effect"]
    timestamp: datetime
    name: str
    component: str
    tenant_id: str
    detail: dict[str, Any] = {}


class TriggerFramework:
    """Evaluates observations against the enabled triggers.

    Cooldown: once a trigger fired for (trigger, tenant, component) it does not fire again for that key
    until cooldown_seconds have passed (measured on observation time), so a sustained condition fires
    once per cooldown period instead of on every point; a cleared and re-crossed condition inside the
    cooldown is also held back. fire_counts counts firings per trigger.

    The cooldown state is a mapping cooldown_key(...) -> epoch seconds of the last firing. By default the
    framework keeps its own; the live path passes the changelogged store of the partition that owns the
    (tenant, component), so the cooldown holds across workers and restarts (see docs/healing.md).
    """

    def __init__(self, config: HealingConfig | None = None) -> None:
        self.config = config or HealingConfig()
        self._gates: dict[str, list[tuple[float, bool]]] = {}  # field -> (threshold, inclusive) of enabled triggers
        for spec in self.config.triggers:
            if spec.enabled:
                self._gates.setdefault(spec.field, []).append((spec.threshold, spec.comparison == "ge"))
        self._last_fired: dict[str, float] = {}
        self.fire_counts: dict[str, int] = defaultdict(int)
        self.suppressed: dict[str, int] = defaultdict(int)

    def may_fire(self, fields: Mapping[str, float | None]) -> bool:
        """Whether any enabled trigger's threshold is crossed by these observation fields (cooldown
        aside): the cheap test that spares building an Observation for the usual quiet point. Uses the
        thresholds as they were when the framework was made (the worker's config does not change)."""
        gates = self._gates
        for name, value in fields.items():
            if value is not None:
                for threshold, ge in gates.get(name, ()):
                    if value >= threshold if ge else value > threshold:
                        return True
        for ratio_field, num, den in _RATIOS:
            if ratio_field in gates and num in fields:
                value = _ratio(fields.get(num), fields.get(den))
                if value is not None and any(value >= t if ge else value > t for t, ge in gates[ratio_field]):
                    return True
        return False

    def may_fire_columns(self, columns: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """may_fire of many points at once: `columns` maps an observation field to its float64 column, one
        row per point, NaN where the point has no value (a NaN crosses no threshold, like a None, and a
        NaN baseline gives no ratio, like a missing one). The rows that cross a threshold, or None when
        no enabled trigger watches these fields. The same comparisons and divisions as may_fire on the
        same float64 values, so the same answer row by row (tests/unit/test_healing_batch.py)."""
        gates = self._gates
        hit: np.ndarray | None = None
        for name, values in columns.items():
            for threshold, ge in gates.get(name, ()):
                crossed = values >= threshold if ge else values > threshold
                hit = crossed if hit is None else hit | crossed
        for ratio_field, num, den in _RATIOS:
            if ratio_field in gates and num in columns and den in columns:
                base = columns[den]
                # _ratio: no ratio without a positive baseline (a NaN one gives none either)
                with np.errstate(over="ignore", invalid="ignore"):
                    ratio = np.divide(columns[num], base, out=np.full(len(base), np.nan), where=base > 0.0)
                for threshold, ge in gates[ratio_field]:
                    crossed = ratio >= threshold if ge else ratio > threshold
                    hit = crossed if hit is None else hit | crossed
        return hit

    def evaluate(self, observation: Observation, now: datetime,
                 cooldowns: MutableMapping[str, float] | None = None) -> list[TriggerFiring]:
        """Firings of this observation; each one is written into `cooldowns` (default: the framework's own)."""
        last_fired = self._last_fired if cooldowns is None else cooldowns
        fired: list[TriggerFiring] = []
        for spec in self.config.triggers:
            if not spec.enabled:
                continue
            value = observation.value(spec.field)
            if value is None or not (value >= spec.threshold if spec.comparison == "ge" else value > spec.threshold):
                continue
            key = cooldown_key(spec.name, observation.tenant_id, observation.component)
            if not self._cooled(last_fired, key, now):
                self.suppressed[spec.name] += 1
                continue
            last_fired[key] = now.timestamp()
            self.fire_counts[spec.name] += 1
            fired.append(TriggerFiring(
                firing_id=firing_id(spec.name, observation.tenant_id, observation.component, now),
                trigger=spec.name, type=spec.type, target_agent=spec.target_agent,
                component=observation.component, tenant_id=observation.tenant_id, timestamp=now, value=value,
                threshold=spec.threshold,
                evidence={"field": spec.field, "comparison": spec.comparison, "source": observation.source,
                          "ref": observation.ref, "observation": observation.model_dump(mode="json",
                                                                                        exclude_none=True)},
            ))
        return fired

    def _cooled(self, last_fired: Mapping[str, float], key: str, now: datetime) -> bool:
        last = last_fired.get(key)
        return last is None or now.timestamp() - last >= self.config.cooldown_seconds

    def comprehensive_due(self, cooldowns: MutableMapping[str, float], tenant_id: str, component: str,
                          now: datetime) -> list[str]:
        """The distinct triggers that fired for (tenant, component) within the cooldown period, when there
        are at least comprehensive_min_triggers of them and comprehensive_system_analysis itself is not
        cooling down (it is then marked fired); else []. Firings of one component spread over several
        points count together, not only those of a single observation."""
        window = self.config.cooldown_seconds
        t = now.timestamp()
        recent = sorted({spec.name for spec in self.config.triggers
                         if t - cooldowns.get(cooldown_key(spec.name, tenant_id, component), float("-inf")) < window})
        key = cooldown_key(COMPREHENSIVE, tenant_id, component)
        if len(recent) < self.config.comprehensive_min_triggers or not self._cooled(cooldowns, key, now):
            return []
        cooldowns[key] = t
        return recent


COMPREHENSIVE = "comprehensive_system_analysis"


def cooldown_key(name: str, tenant_id: str, component: str) -> str:
    """The cooldown state key of a trigger (or of the comprehensive analysis) on one component."""
    return f"{name}|{tenant_id}|{component}"


def firing_id(trigger: str, tenant_id: str, component: str, at: datetime) -> str:
    """Deterministic: the same observation firing again (a redelivery) gets the same id."""
    return "fire-" + hashlib.sha1(f"{trigger}|{tenant_id}|{component}|{at.isoformat()}".encode()).hexdigest()[:16]


class ActionRegistry:
    """Maps firings to the actions registered for their trigger."""

    def __init__(self, config: HealingConfig | None = None) -> None:
        self.config = config or HealingConfig()

    def _plan(self, spec: ActionSpec, firing: TriggerFiring, extra: dict[str, Any] | None = None) -> ActionPlan:
        return ActionPlan(
            action=spec.name, type=spec.type, priority=spec.priority, target_agent=spec.target_agent,
            trigger=firing.trigger, component=firing.component, tenant_id=firing.tenant_id,
            timestamp=firing.timestamp, change_hint=dict(spec.change_hint), firing_id=firing.firing_id,
            handoff={"to": spec.target_agent, "reason": f"{firing.trigger} on {firing.component}",
                     "value": firing.value, "threshold": firing.threshold, "evidence": firing.evidence,
                     **(extra or {})},
        )

    def actions_for(self, firing: TriggerFiring) -> list[ActionPlan]:
        return [self._plan(a, firing) for a in self.config.actions if a.enabled and firing.trigger in a.triggers]

    def actions_for_all(self, firings: Iterable[TriggerFiring],
                        comprehensive: Mapping[tuple[str, str], list[str]] | None = None) -> list[ActionPlan]:
        """Per-firing actions, plus comprehensive_system_analysis per (tenant, component): where the caller
        says it is due (`comprehensive`: (tenant, component) -> triggers, see
        TriggerFramework.comprehensive_due), else where at least comprehensive_min_triggers distinct
        triggers fired together in these firings."""
        firings = list(firings)
        plans = [p for f in firings for p in self.actions_for(f)]
        by_comp: dict[tuple[str, str], list[TriggerFiring]] = defaultdict(list)
        for f in firings:
            by_comp[(f.tenant_id, f.component)].append(f)
        diag = [a for a in self.config.actions if a.enabled and a.name == COMPREHENSIVE]
        for key, group in by_comp.items():
            names = sorted({f.trigger for f in group}) if comprehensive is None else comprehensive.get(key, [])
            if diag and len(names) >= self.config.comprehensive_min_triggers:
                plans.append(self._plan(diag[0], group[0], {"triggers": names}))
        return plans


_SECONDS_PER_UNIT = {"Milliseconds": 1e-3, "Microseconds": 1e-6, "Minutes": 60.0}


def _duration_s(value: float, unit: str) -> float:
    factor = _SECONDS_PER_UNIT.get(unit)
    return value if factor is None else value * factor


# The CloudWatch metrics that give observation fields, by family (metric_observation_fields and its
# column form read the same sets, and the metric path watches their union).
DURATION_METRICS = frozenset({"Duration", "Latency", "ResponseTime"})  # they share a component's baseline
RATE_METRICS = frozenset({"ErrorRate", "TestFailureRate"})
RETRY_METRICS = frozenset({"Retries", "RetryCount"})
USAGE_METRICS = frozenset({"TokensUsed", "CostUSD"})
OBSERVED_METRICS = DURATION_METRICS | RATE_METRICS | RETRY_METRICS | USAGE_METRICS


def metric_observation_fields(metric_name: str, value: float, unit: str,
                              baseline_duration_s: float | None = None) -> dict[str, float | None] | None:
    """The observation fields a CloudWatch point gives: Duration/Latency, ErrorRate, Retries, TokensUsed,
    CostUSD, TestFailureRate (rates given in percent — value > 1 or unit Percent — become fractions);
    None for other metrics."""
    name, v = metric_name, value
    if name in DURATION_METRICS:
        return {"duration_s": _duration_s(v, unit), "baseline_duration_s": baseline_duration_s}
    if name in RATE_METRICS:
        frac = v / 100.0 if (unit == "Percent" or v > 1.0) else v
        return {"error_rate" if name == "ErrorRate" else "test_failure_rate": frac}
    if name in RETRY_METRICS:
        return {"retries": v}
    if name in USAGE_METRICS:
        return {"tokens" if name == "TokensUsed" else "cost_usd": v}
    return None


def durations_s(values: np.ndarray, units: Sequence[Any]) -> np.ndarray:
    """_duration_s of a column of points (float64 values, one unit each): the same product per point."""
    factors = {u: _SECONDS_PER_UNIT.get(u) for u in set(units)}
    with np.errstate(over="ignore"):  # a huge value in Minutes is inf, as in Python (which does not warn)
        if len(factors) == 1:
            factor = next(iter(factors.values()))
            return values if factor is None else values * factor
        # x * 1.0 is x exactly (IEEE), so the points of a unit without a factor keep their value
        ones = {u: 1.0 if f is None else f for u, f in factors.items()}
        return values * np.fromiter(map(ones.__getitem__, units), np.float64, len(units))


def metric_observation_columns(metric_name: str, values: np.ndarray,
                               units: Sequence[Any]) -> dict[str, np.ndarray] | None:
    """metric_observation_fields of many points of one metric at once, a float64 column per field (for
    TriggerFramework.may_fire_columns): `values` the points' values as float64, `units` one per point.
    The same IEEE operations on the same values, so the same numbers bit for bit. A duration metric
    gives its duration_s column only: its baseline column is the caller's EWMA of these durations."""
    name = metric_name
    if name in DURATION_METRICS:
        return {"duration_s": durations_s(values, units)}
    if name in RATE_METRICS:
        percent = {u: bool(u == "Percent") for u in set(units)}
        if len(percent) == 1:
            scaled = next(iter(percent.values())) | (values > 1.0)
        else:
            scaled = np.fromiter(map(percent.__getitem__, units), np.bool_, len(units)) | (values > 1.0)
        field = "error_rate" if name == "ErrorRate" else "test_failure_rate"
        return {field: np.where(scaled, values / 100.0, values)}
    if name in RETRY_METRICS:
        return {"retries": values}
    if name in USAGE_METRICS:
        return {"tokens" if name == "TokensUsed" else "cost_usd": values}
    return None


def observation_from_metric(point: MetricDataPoint, baseline_duration_s: float | None = None) -> Observation | None:
    """A CloudWatch point as an observation (see metric_observation_fields)."""
    fields = metric_observation_fields(point.metric_name, point.value, point.unit, baseline_duration_s)
    if fields is None:
        return None
    return Observation.model_validate({
        "component": point.component(), "tenant_id": point.tenant_id, "timestamp": point.timestamp,
        "source": "cloudwatch", "ref": point.event_id, **fields,
    })


def observations_from_executions(
    records: Iterable[ExecutionMetrics], baselines: Mapping[str, Baseline] | None = None, error_window: int = 20
) -> list[Observation]:
    """One observation per execution; error_rate is the failure fraction over the skill's last
    error_window executions (reported once at least 5 are seen), baselines give the ratio triggers."""
    windows: dict[str, deque[bool]] = defaultdict(lambda: deque(maxlen=error_window))
    out: list[Observation] = []
    for em in records:
        win = windows[em.skill_name]
        win.append(not em.execution_succeeded)
        b = (baselines or {}).get(em.skill_name)
        out.append(Observation(
            component=em.skill_name, tenant_id=em.tenant_id, timestamp=em.timestamp_end,
            duration_s=em.total_latency_ms / 1000.0, retries=float(em.retries),
            error_rate=(sum(win) / len(win)) if len(win) >= 5 else None,
            tokens=float(em.tokens_used) if em.tokens_used else None,
            baseline_tokens=b.avg_tokens_per_execution if b else None, cost_usd=em.cost_usd,
            test_failure_rate=em.test_failure_rate,
            baseline_duration_s=b.latency_p50_ms / 1000.0 if b else None, ref=em.execution_id,
        ))
    return out
