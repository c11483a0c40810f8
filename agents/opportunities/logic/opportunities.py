"""Insights folded into ranked, deduplicated ImprovementOpportunities, with decay and outcome learning (pure).

Problem families (one opportunity per tenant × component × family), chosen to match the planner's
playbook keys (agents/improvement/logic/playbooks.py):

  latency             latency/duration anomalies and trends, performance_degradation, slow alarms,
                      AND timeout errors ("timed out", "deadline", error category Timeout) — a timeout is
                      the failure mode of the same latency problem, so both feed one opportunity
  error_rate          error-rate anomalies/trends, generic recurring exceptions, API integration errors
  database_connection connection/pool errors
  throughput, utilization, cache, n_plus_one, redundant_calls, cost, quota   as named
  anything else       the insight's own problem_type (or insight_type)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from agents.opportunities.logic.impact import impact_score, priority_for
from streams.records import ImprovementOpportunity, TelemetryInsight

__all__ = [
    "CHANGE_KIND",
    "OpportunityContext",
    "OutcomeStats",
    "already_counted",
    "apply_outcome",
    "cache_insight",
    "decay",
    "fold_insight",
    "gain_from_insight",
    "opportunity_id",
    "outcome_factor",
    "penalty",
    "per_request_insight",
    "problem_family",
    "record_outcome",
    "repeated_calls_insights",
    "rescore",
    "users_for",
]

Outcome = Literal["kept", "rolled_back", "failed"]
SYSTEM_TENANTS = frozenset({"*", "system"})
_SEV = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_LEVELS: tuple[Literal["low", "medium", "high"], ...] = ("low", "medium", "high")

# family -> (proposed change kind for the planner, records change_type, effort, base risk)
CHANGE_KIND: dict[str, tuple[str, str, str, str]] = {
    "latency": ("timeout", "configuration", "low", "low"),
    "error_rate": ("retries", "configuration", "low", "low"),
    "database_connection": ("pool", "configuration", "low", "medium"),
    "throughput": ("concurrency", "configuration", "low", "medium"),
    "utilization": ("concurrency", "configuration", "low", "medium"),
    "cache": ("cache", "caching", "medium", "low"),
    "n_plus_one": ("cache", "code", "high", "medium"),
    "redundant_calls": ("cache", "caching", "medium", "medium"),
    "cost": ("routing", "routing", "medium", "medium"),
    "quota": ("routing", "routing", "medium", "medium"),
}
_DEFAULT_KIND = ("feature_flag", "configuration", "medium", "medium")
_TIMEOUT = re.compile(r"time[d ]?\s?out|deadline|etimedout", re.I)
_CONNECTION = re.compile(r"connection (refused|reset|pool)|could not connect|too many connections|pool exhausted"
                         r"|database|econnrefused", re.I)
_METRIC_FAMILY = (
    (re.compile(r"cache.?hit|hit.?rate|cache.?miss", re.I), "cache"),
    (re.compile(r"error|fault|fail|5xx|exception", re.I), "error_rate"),
    (re.compile(r"latency|duration|responsetime|elapsed", re.I), "latency"),
    (re.compile(r"utili[sz]ation|cpu|memory", re.I), "utilization"),
    (re.compile(r"throughput|invocations|requests|count", re.I), "throughput"),
)
_DIRECT = {"latency", "duration", "timeout", "performance_degradation", "error_rate", "errors", "throughput",
           "utilization", "resource_exhaustion", "cache", "caching_optimization", "cache_hit_rate",
           "n_plus_one", "redundant_calls", "cost", "quota", "database_connection"}
_ALIASES = {"duration": "latency", "timeout": "latency", "performance_degradation": "latency",
            "errors": "error_rate", "resource_exhaustion": "utilization", "caching_optimization": "cache",
            "cache_hit_rate": "cache"}


@dataclass
class OutcomeStats:
    """Outcomes of improvements of one (problem family, change kind)."""

    kept: int = 0
    rolled_back: int = 0
    failed: int = 0


@dataclass
class OpportunityContext:
    """What fold/decay need besides the insight: users per hour, limits and learned outcomes.

    users_per_hour[(tenant, component)] is the latest value of settings.opportunity_users_metric
    (or of the settings.opportunity_users_dimension dimension) — see observe(). Fallback order when a
    component has none: (tenant, "*"), then the insight's own metrics[users_metric] / "users_per_hour" /
    "requests_per_hour", then default_users_per_hour.
    """

    users_metric: str = "ActiveUsers"
    users_dimension: str = "users"
    users_per_hour: dict[tuple[str, str], float] = field(default_factory=dict)
    default_users_per_hour: float = 100.0
    evidence_limit: int = 20
    decay_hours: float = 6.0
    # Findings of one series this close to a retained one are the same incident (see already_counted).
    incident_seconds: float = 600.0
    seen_limit: int = 100  # ids of folded insights remembered in the opportunity (beyond the evidence kept)
    outcomes: dict[tuple[str, str], OutcomeStats] = field(default_factory=dict)

    def observe(self, point: Mapping[str, Any]) -> bool:
        """Remember users/hour from a metric point (a lean point, see streams/metric_codec.py); True
        when the point carried a users figure."""
        dims = point["dimensions"]
        value: float | None = None
        if point["metric_name"] == self.users_metric:
            value = float(point["value"])
        elif self.users_dimension in dims:
            try:
                value = float(dims[self.users_dimension])
            except ValueError:
                return False
        if value is None:
            return False
        tenant = point["tenant_id"]
        self.users_per_hour[(tenant, point["component"])] = value
        self.users_per_hour[(tenant, "*")] = max(value, self.users_per_hour.get((tenant, "*"), 0))
        return True


def opportunity_id(tenant_id: str, component: str, problem_type: str) -> str:
    """Deterministic: the same problem always has the same id."""
    return "opp-" + hashlib.sha1(f"{tenant_id}|{component}|{problem_type}".encode()).hexdigest()[:20]


def problem_family(insight: TelemetryInsight) -> str:
    """The problem family of an insight (see the module docstring)."""
    ptype = (insight.problem_type or "").lower()
    text = " ".join([insight.description, str(insight.evidence.get("template", "")),
                     str(insight.evidence.get("category", "")), str(insight.evidence.get("error_type", ""))])
    if ptype in {"error_pattern", "", "alarm", "anomaly"} or insight.insight_type in {"error_pattern", "alarm"}:
        category = str(insight.evidence.get("category", "")).lower()
        if category in {"timeout", "n_plus_one", "database_connection"}:
            return "latency" if category == "timeout" else category
        if ptype == "error_pattern" or insight.insight_type == "error_pattern":
            if _TIMEOUT.search(text):
                return "latency"
            return "database_connection" if _CONNECTION.search(text) else "error_rate"
    if ptype in _DIRECT:
        return _ALIASES.get(ptype, ptype)
    if insight.metric_name:
        for pat, fam in _METRIC_FAMILY:
            if pat.search(insight.metric_name):
                return fam
    return ptype or insight.insight_type


def _first(metrics: Mapping[str, float], *keys: str) -> float | None:
    for k in keys:
        v = metrics.get(k)
        if v is not None and math.isfinite(float(v)):
            return float(v)
    return None


_FALLBACK_GAIN = {"critical": 50.0, "high": 30.0, "medium": 15.0, "low": 5.0}


def gain_from_insight(insight: TelemetryInsight, family: str) -> float:
    """Expected performance gain in % (0..100) from the insight's measured deviation.

    expected_gain_pct if given; else current vs baseline: higher-is-worse metrics (latency, cost…) give
    the excess over baseline ((current − baseline) / baseline, e.g. latency +40 % → 40), throughput the
    drop ((baseline − current) / baseline), rates in [0, 1] the excess in percentage points; else
    change_pct / deviation_pct; else a severity default (critical 50, high 30, medium 15, low 5).
    """
    m = insight.metrics
    direct = _first(m, "expected_gain_pct")
    if direct is not None:
        return max(0.0, min(100.0, direct))
    cur = _first(m, "current", "current_value", "value", "current_mean")
    base = _first(m, "baseline", "baseline_value", "baseline_mean", "expected", "mean")
    gain: float | None = None
    if cur is not None and base is not None:
        if family == "throughput":
            gain = (base - cur) / base * 100.0 if base > 0 else None
        elif family == "error_rate" and 0.0 <= cur <= 1.0 and 0.0 <= base <= 1.0:
            gain = (cur - base) * 100.0
        elif base > 0:
            gain = (cur - base) / base * 100.0
    if gain is None:
        pct = _first(m, "change_pct", "deviation_pct", "increase_pct")
        gain = abs(pct) if pct is not None else None
    if gain is None or gain <= 0:
        gain = _FALLBACK_GAIN.get(insight.severity, 15.0)
    return min(100.0, gain)


def users_for(insight: TelemetryInsight, tenant: str, component: str, ctx: OpportunityContext) -> float:
    """Users per hour of a component: its own figure, the tenant's largest, the insight's, the default."""
    for key in ((tenant, component), (tenant, "*")):
        if key in ctx.users_per_hour:
            return ctx.users_per_hour[key]
    own = _first(insight.metrics, ctx.users_metric, "users_per_hour", "requests_per_hour")
    return own if own is not None else ctx.default_users_per_hour


def _rate_per_day(insight: TelemetryInsight) -> float | None:
    """Occurrences per day the insight itself reports (pattern window counts)."""
    m = insight.metrics
    per_hour = _first(m, "occurrences_per_hour", "count_per_hour", "rate_per_hour")
    if per_hour is not None:
        return per_hour * 24.0
    count = _first(m, "count", "occurrences")
    window = insight.evidence.get("window_seconds")
    if count is not None and isinstance(window, int | float) and window > 0:
        return count * 86400.0 / float(window)
    return None


def _frequency(occurrences: int, first: datetime, last: datetime, evidence: Iterable[TelemetryInsight]) -> float:
    """Per day: the larger of the highest window rate reported by the retained evidence and the
    occurrences extrapolated over first..last (a span shorter than one hour counts as one hour; a single
    occurrence counts as once a day). The highest, not the latest: evidence of another kind (an anomaly
    after a pattern count) must not lower the frequency of the same problem."""
    span_days = max((last - first).total_seconds() / 86400.0, 1.0 / 24.0)
    observed = occurrences / span_days if occurrences > 1 else 1.0
    reported = max((_rate_per_day(e) or 0.0 for e in evidence), default=0.0)
    return max(observed, reported)


def _system(tenant: str, tenants: Iterable[str]) -> bool:
    ts = set(tenants)
    return tenant in SYSTEM_TENANTS or bool(ts & SYSTEM_TENANTS) or len(ts) > 1


def _risk(base: str, system: bool) -> Literal["low", "medium", "high"]:
    idx = _LEVELS.index(base) + (1 if system else 0)  # type: ignore[arg-type]
    return _LEVELS[min(idx, 2)]


def outcome_factor(ctx_outcomes: Mapping[tuple[str, str], OutcomeStats], family: str, kind: str) -> float:
    """0.5 + Laplace-smoothed success rate of similar improvements: 1.0 with no history, → 1.5 when they
    were kept, → 0.5 when they were rolled back or failed."""
    s = ctx_outcomes.get((family, kind))
    if s is None:
        return 1.0
    total = s.kept + s.rolled_back + s.failed
    return 0.5 + (s.kept + 1.0) / (total + 2.0)


def rescore(opp: ImprovementOpportunity, factor: float = 1.0) -> ImprovementOpportunity:
    """impact_score/priority recomputed from the opportunity's inputs × outcome_adjustment × factor."""
    score = impact_score(opp.performance_gain_percentage, opp.affected_users_per_hour, opp.frequency_per_day,
                         opp.severity, opp.confidence_score, opp.risk_level) * opp.outcome_adjustment * factor
    return opp.model_copy(update={"impact_score": round(score, 6), "priority": priority_for(score)})


def fold_insight(
    existing: ImprovementOpportunity | None, insight: TelemetryInsight, now: datetime, ctx: OpportunityContext
) -> ImprovementOpportunity:
    """The opportunity after one more piece of evidence (a new one if existing is None).

    An insight already counted (already_counted: the same id again, or another finding of the same
    incident of a series) leaves the opportunity as it is: replays and re-emissions after a partition
    move do not double count. The ids are remembered in the opportunity itself (proposed_changes
    "seen_insights", the latest seen_limit), so the memory is in the changelogged state and survives
    restarts and partition moves.
    Independent of the order insights arrive in (they come from several stages and, with several
    workers, from several processes): the evidence kept is the latest `evidence_limit` by their own
    time (ties by id), and "latest" below means latest by that order. Severity is the worst of the
    retained evidence, confidence the mean of the retained evidence times the learned outcome factor,
    gain the latest insight's measured deviation; a closed/resolved opportunity that recurs is reopened.
    """
    family = existing.problem_type if existing is not None else problem_family(insight)
    tenant = existing.tenant_id if existing is not None else insight.tenant_id
    component = existing.affected_components[0] if existing is not None else insight.affected_component
    if existing is not None and already_counted(existing, insight, ctx):
        return existing
    kind, change_type, effort, base_risk = CHANGE_KIND.get(family, _DEFAULT_KIND)
    evidence = sorted([*existing.telemetry_evidence, insight] if existing else [insight],
                      key=_evidence_order)[-ctx.evidence_limit:]
    latest = evidence[-1]
    tenants = sorted({*(existing.affected_tenants if existing else []), *insight.affected_tenants,
                      *([tenant] if tenant not in SYSTEM_TENANTS else [])})
    system = _system(tenant, tenants) or (existing is not None and existing.scope == "system")
    first = min(existing.first_seen, insight.timestamp) if existing else insight.timestamp
    last = max(existing.last_seen, insight.timestamp) if existing else insight.timestamp
    occurrences = (existing.occurrences if existing else 0) + 1
    factor = outcome_factor(ctx.outcomes, family, kind)
    confidence = min(1.0, max(0.0, sum(e.confidence_score for e in evidence) / len(evidence) * factor))
    severity = max((e.severity for e in evidence), key=_SEV.__getitem__)
    changes: dict[str, object] = {**(existing.proposed_changes if existing else {}), "kind": kind}
    changes[SEEN] = [*_seen(existing), insight.insight_id][-ctx.seen_limit:]
    previous_penalty = penalty(changes.get("previous_outcomes"))
    for e in evidence:
        for key in ("category", "failing_target"):
            if key in e.evidence:
                changes[key] = e.evidence[key]
    opp = ImprovementOpportunity(
        opportunity_id=opportunity_id(tenant, component, family),
        title=f"{family.replace('_', ' ')} of {component}" + (" (system-wide)" if system else ""),
        description=latest.description, severity=severity, confidence_score=round(confidence, 6),
        effort_estimate=effort, risk_level=_risk(base_risk, system),  # type: ignore[arg-type]
        affected_components=sorted({component, *(existing.affected_components if existing else [])},
                                   key=lambda c: (c != component, c)),
        affected_tenants=tenants, tenant_id=tenant, problem_type=family, change_type=change_type,
        scope="system" if system else "tenant", requires_approval=system, telemetry_evidence=evidence,
        proposed_changes=changes, performance_gain_percentage=round(gain_from_insight(latest, family), 6),
        affected_users_per_hour=users_for(latest, tenant, component, ctx),
        frequency_per_day=round(_frequency(occurrences, first, last, evidence), 6), occurrences=occurrences,
        first_seen=first, last_seen=last, status="open", outcome_adjustment=round(factor * previous_penalty, 6),
    )
    return rescore(opp)


SEEN = "seen_insights"  # proposed_changes key: ids of the insights folded in, latest last (bounded)


def _seen(opp: ImprovementOpportunity | None) -> list[str]:
    ids = opp.proposed_changes.get(SEEN) if opp is not None else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


def already_counted(opp: ImprovementOpportunity, insight: TelemetryInsight, ctx: OpportunityContext) -> bool:
    """True when the insight is one the opportunity already counts: the same insight again (its id among
    the retained evidence or the remembered ids — a re-delivery, or a stage re-emitting after a partition
    move), or another finding of the same incident: a finding of the same series as a retained insight,
    at most incident_seconds apart (an anomaly and a trend of one latency step are one incident). A
    scoring stage restored on its partition's new owner can report a later point of an incident it
    reported before the move (a trend finding after the anomaly: the restored trend state is not the
    state it had), and one incident is one occurrence whichever worker scored it."""
    if insight.insight_id in _seen(opp) or any(e.insight_id == insight.insight_id for e in opp.telemetry_evidence):
        return True
    series = insight.evidence.get("series")
    if not series:
        return False
    return any(e.evidence.get("series") == series and abs((e.timestamp - insight.timestamp).total_seconds()) <= ctx.incident_seconds
               for e in opp.telemetry_evidence)


def _evidence_order(e: TelemetryInsight) -> tuple[datetime, str]:
    return e.timestamp, e.insight_id


def decay(opp: ImprovementOpportunity, now: datetime, ctx: OpportunityContext) -> ImprovementOpportunity:
    """Score × (1 − idle/decay_hours) once idle for longer than an hour; closed after decay_hours
    without evidence. Recomputed from the inputs, so calling it often does not compound."""
    if opp.status not in {"open", "in_progress"}:
        return opp
    idle_h = max(0.0, (now - opp.last_seen).total_seconds() / 3600.0)
    if opp.status == "open" and idle_h >= ctx.decay_hours:
        return rescore(opp, 0.0).model_copy(update={"status": "closed"})
    if idle_h <= 1.0:
        return rescore(opp)
    return rescore(opp, max(0.0, 1.0 - idle_h / ctx.decay_hours))


_PENALTY = {"kept": 1.0, "rolled_back": 0.5, "failed": 0.7}


def penalty(previous: object) -> float:
    """The product of the penalties of an opportunity's earlier outcomes."""
    out = 1.0
    for o in previous if isinstance(previous, list) else []:
        out *= _PENALTY.get(str(o), 1.0)
    return out


def apply_outcome(opp: ImprovementOpportunity, outcome: Outcome) -> ImprovementOpportunity:
    """kept → resolved; rolled_back → open with outcome_adjustment × 0.5 (the same fix should not lead
    the queue again); failed → open with × 0.7. The outcome is appended to
    proposed_changes["previous_outcomes"] (the planner sees earlier attempts; later folds keep the penalty)."""
    previous = opp.proposed_changes.get("previous_outcomes")
    changes = {**opp.proposed_changes, "previous_outcomes": [*(previous if isinstance(previous, list) else []),
                                                             outcome]}
    if outcome == "kept":
        return opp.model_copy(update={"status": "resolved", "proposed_changes": changes})
    return rescore(opp.model_copy(update={"status": "open", "proposed_changes": changes,
                                          "outcome_adjustment": opp.outcome_adjustment * _PENALTY[outcome]}))


def record_outcome(
    outcomes: Mapping[tuple[str, str], OutcomeStats], opp: ImprovementOpportunity, outcome: Outcome
) -> dict[tuple[str, str], OutcomeStats]:
    """A new outcomes map with this outcome counted for the opportunity's (family, change kind)."""
    key = (opp.problem_type, str(opp.proposed_changes.get("kind", CHANGE_KIND.get(opp.problem_type,
                                                                                    _DEFAULT_KIND)[0])))
    old = outcomes.get(key, OutcomeStats())
    new = OutcomeStats(old.kept + (outcome == "kept"), old.rolled_back + (outcome == "rolled_back"),
                       old.failed + (outcome == "failed"))
    return {**outcomes, key: new}


# --- Caching and efficiency rules (docs/formulas.md) ---------------------------------------


def _efficiency(problem: str, component: str, tenant_id: str, now: datetime, metrics: dict[str, float],
                description: str, action: str, severity: Literal["low", "medium", "high"],
                metric_name: str | None = None, evidence: dict[str, object] | None = None) -> TelemetryInsight:
    return TelemetryInsight(
        insight_type="optimization_opportunity", severity=severity, affected_component=component,
        affected_tenants=[tenant_id], tenant_id=tenant_id, metrics=metrics, description=description,
        recommended_action=action, confidence_score=0.8, timestamp=now, source="efficiency",
        metric_name=metric_name, problem_type=problem, evidence=dict(evidence or {}),
    )


def cache_insight(hits: float, misses: float, requests_per_hour: float, *, component: str, tenant_id: str,
                  now: datetime, min_hit_rate: float = 0.5, min_requests_per_hour: float = 100.0
                  ) -> TelemetryInsight | None:
    """Low cache efficiency: hit rate < 50 % with > 100 requests/hour. Expected gain: half of the misses
    turned into hits ((1 − hit rate) × 50 %)."""
    total = hits + misses
    if total <= 0 or requests_per_hour <= min_requests_per_hour:
        return None
    rate = hits / total
    if rate >= min_hit_rate:
        return None
    return _efficiency(
        "cache", component, tenant_id, now,
        {"cache_hit_rate": rate, "requests_per_hour": requests_per_hour, "expected_gain_pct": (1 - rate) * 50.0,
         "occurrences_per_hour": 1.0},
        f"{component}: cache hit rate {rate:.0%} at {requests_per_hour:.0f} requests/hour",
        "enlarge the cache / lengthen its TTL", "high" if rate < 0.2 else "medium", "CacheHitRate",
    )


_PER_REQUEST = {"DbQueriesPerRequest": "n_plus_one", "ApiCallsPerRequest": "redundant_calls"}


def per_request_insight(metric_name: str, current: float, baseline: float, *, component: str, tenant_id: str,
                        now: datetime, ratio: float = 2.0, min_calls: float = 5.0) -> TelemetryInsight | None:
    """N+1 queries (DbQueriesPerRequest) or redundant calls (ApiCallsPerRequest): at least `ratio` × the
    baseline and at least `min_calls` per request."""
    problem = _PER_REQUEST.get(metric_name)
    if problem is None or current < min_calls or current < ratio * max(baseline, 1e-9):
        return None
    return _efficiency(
        problem, component, tenant_id, now, {"current": current, "baseline": baseline},
        f"{component}: {metric_name} {current:.1f} vs baseline {baseline:.1f}",
        "batch the per-item queries" if problem == "n_plus_one" else "deduplicate / cache repeated calls",
        "high" if current >= 4 * max(baseline, 1e-9) else "medium", metric_name,
    )


_QUERY = re.compile(r"\b(select|insert|update|delete|query|sql)\b", re.I)


def repeated_calls_insights(calls: Iterable[tuple[str, str]], *, component: str, tenant_id: str, now: datetime,
                            min_repeats: int = 10) -> list[TelemetryInsight]:
    """(request_id, log template) pairs: a template repeated ≥ min_repeats times within one request is an
    N+1 query (SQL-looking template) or a redundant call — one insight per template, worst request kept."""
    counts: dict[tuple[str, str], int] = {}
    for request_id, template in calls:
        counts[(request_id, template)] = counts.get((request_id, template), 0) + 1
    worst: dict[str, tuple[int, str, int]] = {}
    for (request_id, template), n in counts.items():
        if n >= min_repeats:
            seen = worst.get(template, (0, "", 0))
            worst[template] = (max(seen[0], n), request_id if n > seen[0] else seen[1], seen[2] + 1)
    return [
        _efficiency("n_plus_one" if _QUERY.search(t) else "redundant_calls", component, tenant_id, now,
                    {"current": float(n), "baseline": 1.0, "requests_affected": float(reqs)},
                    f"{component}: '{t[:80]}' repeated {n}× in request {rid}", "batch or cache the repeated call",
                    "medium", None, {"template": t, "request_id": rid})
        for t, (n, rid, reqs) in sorted(worst.items())
    ]
