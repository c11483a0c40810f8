"""Offline remediation planner: playbooks mapping problem types to bounded parameter/config changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from streams.records import ImprovementOpportunity

Value = float | str | bool
Risk = Literal["low", "medium", "high"]
_RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class ParameterSpec:
    """A tunable parameter: bounds, step and how the step applies ("add" or "mul")."""

    name: str
    default: float
    minimum: float
    maximum: float
    step: float
    mode: Literal["add", "mul"] = "add"
    integer: bool = True


PARAMETERS: dict[str, ParameterSpec] = {p.name: p for p in (
    ParameterSpec("cache_size", 1024, 16, 1_048_576, 2.0, "mul"),
    ParameterSpec("cache_ttl_seconds", 60, 1, 86_400, 2.0, "mul"),
    ParameterSpec("timeout_ms", 5000, 100, 60_000, 1.5, "mul"),
    ParameterSpec("pool_size", 10, 1, 200, 1.5, "mul"),
    ParameterSpec("max_retries", 2, 0, 5, 1, "add"),
    ParameterSpec("concurrency", 8, 1, 256, 1.5, "mul"),
    ParameterSpec("batch_size", 50, 1, 1000, 2.0, "mul"),
)}
ROUTING_STEP = 0.1  # routing.<target> weights live in [0, 1], moved by this step


@dataclass(frozen=True)
class Action:
    """One move of a playbook: step a numeric parameter up/down, or set a feature flag."""

    parameter: str
    direction: int = 1  # +1 up, -1 down (numeric); ignored for flags
    steps: int = 1
    flag_value: bool | None = None  # set for feature_flags.<name>


@dataclass(frozen=True)
class Playbook:
    name: str
    problem_types: frozenset[str]
    actions: tuple[Action, ...]
    rationale: str
    expected_gain_pct: float
    risk: Risk
    shift_routing: bool = False  # move weight away from a failing routing target


@dataclass(frozen=True)
class ParameterChange:
    parameter: str
    old: Value | None  # the value read from the actuator when planning; None: absent
    new: Value
    bounds: tuple[float, float] | None  # None for flags


@dataclass
class Plan:
    """What to change for one (tenant, component): bounded changes with rationale and risk."""

    tenant_id: str
    component: str
    playbook: str
    changes: list[ParameterChange]
    rationale: str
    expected_gain_pct: float
    risk: Risk
    change_type: str = "configuration"  # configuration | routing | code
    files: dict[str, str] = field(default_factory=dict)  # for generated-code plans

    def as_dict(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id, "component": self.component, "playbook": self.playbook,
            "changes": [{"parameter": c.parameter, "old": c.old, "new": c.new,
                         "bounds": list(c.bounds) if c.bounds else None} for c in self.changes],
            "rationale": self.rationale, "expected_gain_pct": self.expected_gain_pct, "risk": self.risk,
            "change_type": self.change_type, "files": dict(self.files),
        }


def _pb(name: str, types: set[str], actions: list[Action], why: str, gain: float, risk: Risk,
        shift: bool = False) -> Playbook:
    return Playbook(name, frozenset(types), tuple(actions), why, gain, risk, shift)


CATALOGUE: tuple[Playbook, ...] = (
    _pb("latency", {"latency", "performance_degradation"},
        [Action("cache_size", 1), Action("cache_ttl_seconds", 1), Action("pool_size", 1), Action("concurrency", 1)],
        "Latency above baseline: serve more from cache and widen the connection pool and concurrency.", 20, "low"),
    _pb("caching", {"cache", "caching_optimization", "cache_hit_rate"},
        [Action("cache_size", 1, 2), Action("cache_ttl_seconds", 1, 2)],
        "Low cache hit rate: a larger cache that keeps entries longer.", 30, "low"),
    _pb("timeout", {"timeout", "error_pattern:timeout"},
        [Action("timeout_ms", 1), Action("max_retries", 1), Action("feature_flags.circuit_breaker", flag_value=True)],
        "Timeouts: a longer deadline, one more retry, and a circuit breaker against a slow dependency.", 15, "medium"),
    _pb("error_rate", {"error_rate", "error_pattern", "error_pattern:api_error", "api_error"},
        [Action("max_retries", 1), Action("feature_flags.circuit_breaker", flag_value=True)],
        "Errors above baseline: retry transient failures, trip a breaker, shift traffic off a failing target.",
        15, "medium", shift=True),
    _pb("database_connection", {"database_connection", "error_pattern:database_connection"},
        [Action("pool_size", 1), Action("timeout_ms", 1), Action("max_retries", 1)],
        "Database connection failures: more pooled connections, a longer connect timeout, one retry.", 15, "medium"),
    _pb("throughput", {"throughput"},
        [Action("concurrency", 1), Action("pool_size", 1), Action("batch_size", 1)],
        "Throughput below baseline: more workers, connections and larger batches.", 20, "medium"),
    _pb("utilization", {"utilization", "resource_exhaustion"},
        [Action("concurrency", -1), Action("batch_size", -1), Action("feature_flags.load_shedding", flag_value=True)],
        "Resource exhaustion: fewer concurrent requests, smaller batches, shed load above capacity.", 10, "medium"),
    _pb("n_plus_one", {"n_plus_one", "inefficient_query", "error_pattern:n_plus_one"},
        [Action("feature_flags.batch_queries", flag_value=True), Action("cache_size", 1)],
        "N+1 queries: batch the per-row queries and cache the results.", 25, "medium"),
)
_ERROR_CATEGORIES = ("timeout", "database_connection", "api_error", "n_plus_one")
_KEYWORDS = {"timeout": "timeout", "timed out": "timeout", "database": "database_connection",
             "connection": "database_connection", "api": "api_error", "n+1": "n_plus_one"}


# Errors that say the service is out of capacity (requests shed, queues full): more retries would add load,
# what helps is capacity, so such errors are planned as a throughput problem.
_SATURATION = ("queue full", "workers busy", "overloaded", "server busy", "too many requests", "capacity exceeded")


def _saturated(opportunity: ImprovementOpportunity) -> bool:
    texts = [opportunity.title, opportunity.description]
    for insight in opportunity.telemetry_evidence:
        texts += [insight.description, str(insight.evidence.get("template", ""))]
    text = " ".join(texts).lower()
    return any(word in text for word in _SATURATION)


def problem_key(opportunity: ImprovementOpportunity) -> str:
    """The playbook key of an opportunity: its problem type, with the error category for error patterns
    (errors of an overloaded service: "throughput")."""
    ptype = opportunity.problem_type
    if ptype in ("error_rate", "error_pattern") and _saturated(opportunity):
        return "throughput"
    if ptype != "error_pattern":
        return ptype
    category = str(opportunity.proposed_changes.get("category", ""))
    for insight in opportunity.telemetry_evidence:
        category = category or str(insight.evidence.get("category", ""))
    if category not in _ERROR_CATEGORIES:
        text = f"{opportunity.title} {opportunity.description}".lower()
        category = next((cat for word, cat in _KEYWORDS.items() if word in text), "")
    return f"error_pattern:{category}" if category else "error_pattern"


def find_playbook(key: str) -> Playbook | None:
    return next((pb for pb in CATALOGUE if key in pb.problem_types), None)


def _clamp(spec: ParameterSpec, value: float) -> float:
    value = min(spec.maximum, max(spec.minimum, value))
    return float(round(value)) if spec.integer else value


def _step(spec: ParameterSpec, current: float, direction: int, steps: int) -> float:
    value = current
    for _ in range(steps):
        if spec.mode == "mul":
            value = value * spec.step if direction > 0 else value / spec.step
        else:
            value = value + direction * spec.step
        value = _clamp(spec, value)
    return value


def _numeric(current: dict[str, Value], spec: ParameterSpec) -> float:
    raw = current.get(spec.name, spec.default)
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else spec.default


def _routing_changes(current: dict[str, Value], failing: str) -> list[ParameterChange]:
    """Move ROUTING_STEP of weight from the failing target to the others, evenly, within [0, 1]."""
    key = f"routing.{failing}"
    others = sorted(k for k in current if k.startswith("routing.") and k != key)
    if key not in current or not others:
        return []
    old = float(current[key])
    moved = min(ROUTING_STEP, max(0.0, old))
    if moved <= 0:
        return []
    changes = [ParameterChange(key, old, round(old - moved, 6), (0.0, 1.0))]
    share = moved / len(others)
    for k in others:
        o = float(current[k])
        changes.append(ParameterChange(k, o, round(min(1.0, o + share), 6), (0.0, 1.0)))
    return changes


def deviation_pct(opportunity: ImprovementOpportunity) -> float:
    """The largest measured deviation behind the opportunity, in % of the baseline (capped at 100): its
    expected gain, or any evidence's |current − baseline| / baseline."""
    dev = opportunity.performance_gain_percentage
    for insight in opportunity.telemetry_evidence:
        cur, base = insight.metrics.get("current", insight.metrics.get("value")), insight.metrics.get("baseline")
        if isinstance(cur, int | float) and isinstance(base, int | float) and base > 0:
            dev = max(dev, abs(cur - base) / base * 100.0)
    return min(100.0, dev)


def extra_steps(opportunity: ImprovementOpportunity) -> int:
    """Steps added to every numeric move: the measured deviation sets how far one plan goes: under 50 % one
    step, 50 % or more two, 100 % (the metric at least doubled or halved to nothing) three. Every step
    stays within the parameter's bounds; monitoring judges the result."""
    dev = deviation_pct(opportunity)
    return (dev >= 50.0) + (dev >= 100.0)


def plan(opportunity: ImprovementOpportunity, current: dict[str, Value], component: str | None = None) -> Plan:
    """A deterministic, bounded plan for the opportunity; no network.  Parameters already at their
    bound are left out, and so are parameters the service does not expose when `current` holds any;
    an opportunity with no playbook yields an empty plan (change_type "code": it
    needs the code generator)."""
    comp = component or (opportunity.affected_components[0] if opportunity.affected_components else "default")
    key = problem_key(opportunity)
    pb = find_playbook(key) or (find_playbook("error_rate") if key.startswith("error_pattern") else None)
    if pb is None:
        return Plan(opportunity.tenant_id, comp, "none", [], f"no playbook for problem type {key!r}", 0.0,
                    "high", change_type="code")
    changes: list[ParameterChange] = []
    hint = opportunity.proposed_changes.get("change_hint")  # from a self-healing action (docs/healing.md)
    for action in pb.actions:
        if isinstance(hint, dict) and hint.get("kind") == "retries" and action.parameter == "max_retries" \
                and action.direction > 0:
            continue  # the trigger was too many retries: never answer it with one more
        if current and action.parameter not in current:
            continue  # the service exposes knobs, and not this one: writing it would change nothing
        if action.flag_value is not None:
            old = current.get(action.parameter)
            if old != action.flag_value:
                changes.append(ParameterChange(action.parameter, old, action.flag_value, None))
            continue
        spec = PARAMETERS[action.parameter]
        old_value = _numeric(current, spec)
        new_value = _step(spec, old_value, action.direction, action.steps + extra_steps(opportunity))
        if new_value != old_value:
            # "old" is what the target holds (read from the actuator), None when it holds nothing: the
            # service then runs on its own default, which kaizen does not know; the step starts from
            # the playbook's default
            changes.append(ParameterChange(spec.name, current.get(spec.name), new_value,
                                           (spec.minimum, spec.maximum)))
    change_type = "configuration"
    failing = str(opportunity.proposed_changes.get("failing_target", ""))
    if pb.shift_routing and failing:
        routing = _routing_changes(current, failing)
        if routing:
            changes.extend(routing)
            change_type = "routing"
    gain = pb.expected_gain_pct
    if opportunity.performance_gain_percentage > 0:
        gain = min(gain, opportunity.performance_gain_percentage)
    risk: Risk = max(pb.risk, opportunity.risk_level, key=lambda r: _RISK_ORDER[r])  # type: ignore[assignment]
    rationale = pb.rationale if changes else pb.rationale + " (every parameter already at its bound)"
    return Plan(opportunity.tenant_id, comp, pb.name, changes, rationale, gain if changes else 0.0, risk,
                change_type=change_type)


def within_bounds(p: Plan) -> list[str]:
    """Reasons a plan leaves its bounds (empty when every change is inside them)."""
    errors: list[str] = []
    for c in p.changes:
        if c.bounds is None:
            if not isinstance(c.new, bool):
                errors.append(f"{c.parameter}: flag value {c.new!r} is not a boolean")
            continue
        lo, hi = c.bounds
        if isinstance(c.new, bool) or not isinstance(c.new, int | float) or not lo <= c.new <= hi:
            errors.append(f"{c.parameter}: {c.new!r} outside [{lo}, {hi}]")
    return errors
