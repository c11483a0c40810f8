"""Which of several concurrent opportunities of a tenant to work on first: the likely cause (pure).

One fault shows in several places at once: a slow or failing service slows down and fails every service
that calls it, and a service's error-rate metric rises in the same second as the log lines that name the
cause. Working on the symptom first wastes the change (or hides the cause for a while), so a cycle orders
its candidates with two rules, both read from the telemetry alone:

* **the larger relative deviation is the likely cause.** Opportunities of one tenant in the same signal
  group (latency-like, error-like, throughput-like) whose evidence overlaps in time are one incident; the
  component whose metric moved furthest from its own baseline (|ln(current / baseline)|) comes first, the
  others wait while it is worked on. A caller's latency holds its callee's plus its own work, so the same
  added milliseconds are a larger share of the callee's; a caller's error rate holds its own base errors
  besides its callee's. A component whose deviation is not measured (a log pattern) explains nothing.
* **the specific evidence before the generic one.** On one component, an opportunity whose evidence names
  the cause (connection/pool failures) comes before the generic error-rate one of the same moment: its
  playbook changes what the errors say is short.

And a throughput change alone is demand, not a fault: it waits until the component also slows down or
fails (`demand_only`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

from streams.records import ImprovementOpportunity

__all__ = ["GROUPS", "INCIDENT_WINDOW", "cause_first", "demand_only", "deviation", "likely_cause", "more_specific"]

# problem family -> signal group (families outside it are never compared)
GROUPS: dict[str, str] = {
    "latency": "latency", "cache": "latency", "performance_degradation": "latency",
    "error_rate": "errors", "error_pattern": "errors", "database_connection": "errors",
    "throughput": "throughput", "utilization": "throughput",
}
# families whose evidence names a cause, preferred on the same component over the group's generic family
SPECIFIC: dict[str, tuple[str, ...]] = {"errors": ("database_connection",)}
GENERIC: dict[str, tuple[str, ...]] = {"errors": ("error_rate", "error_pattern")}
INCIDENT_WINDOW = timedelta(seconds=120)  # evidence this close in time is one incident
CAUSE_MARGIN = math.log(1.2)  # the cause's ratio to its baseline is at least 1.2x the symptom's
MAX_DEVIATION = math.log(1000.0)  # a metric up from zero


def _number(metrics: dict[str, float], *keys: str) -> float | None:
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            return float(v)
    return None


def deviation(opp: ImprovementOpportunity) -> float | None:
    """The largest |ln(current / baseline)| of the opportunity's evidence of its latest incident (None:
    no evidence measures a metric against its baseline)."""
    best: float | None = None
    for e in opp.telemetry_evidence:
        if e.timestamp < opp.last_seen - INCIDENT_WINDOW:
            continue
        cur = _number(e.metrics, "current", "current_value", "value", "current_mean")
        base = _number(e.metrics, "baseline", "baseline_value", "baseline_mean")
        if cur is None or base is None:
            continue
        if base > 0 and cur > 0:
            d = min(MAX_DEVIATION, abs(math.log(cur / base)))
        elif cur > 0 >= base:
            d = MAX_DEVIATION
        else:
            continue
        best = d if best is None else max(best, d)
    return best


def _concurrent(a: ImprovementOpportunity, b: ImprovementOpportunity) -> bool:
    return a.first_seen - INCIDENT_WINDOW <= b.last_seen and b.first_seen - INCIDENT_WINDOW <= a.last_seen


def component_deviation(opp: ImprovementOpportunity, others: Sequence[ImprovementOpportunity]) -> float | None:
    """The deviation of `opp`'s component in its signal group: the largest of its own and of the
    component's concurrent opportunities of the group in any status (a deviation belongs to the
    component's signal, not to the opportunity its evidence was filed under: an error rate already worked
    on measures the same errors as the log pattern that names their cause)."""
    group = GROUPS.get(opp.problem_type)
    devs = [deviation(o) for o in [opp, *others]
            if o.tenant_id == opp.tenant_id and o.affected_components[:1] == opp.affected_components[:1]
            and GROUPS.get(o.problem_type) == group and (o is opp or _concurrent(opp, o))]
    known = [d for d in devs if d is not None]
    return max(known) if known else None


def likely_cause(opp: ImprovementOpportunity, others: Sequence[ImprovementOpportunity]
                 ) -> ImprovementOpportunity | None:
    """The open opportunity of another component of the same tenant that explains `opp` (same signal
    group, the same incident, a clearly larger deviation of its component), the largest if several; None:
    `opp` is its own likely cause."""
    group = GROUPS.get(opp.problem_type)
    mine = component_deviation(opp, others)
    if group is None or mine is None or not opp.affected_components:
        return None
    best: tuple[float, ImprovementOpportunity] | None = None
    for o in others:
        if o.tenant_id != opp.tenant_id or o.status not in ("open", "in_progress") \
                or GROUPS.get(o.problem_type) != group \
                or not o.affected_components or o.affected_components[0] == opp.affected_components[0] \
                or not _concurrent(opp, o):
            continue
        d = component_deviation(o, others)
        if d is not None and d > mine + CAUSE_MARGIN and (best is None or d > best[0]):
            best = (d, o)
    return best[1] if best else None


def more_specific(opp: ImprovementOpportunity, others: Sequence[ImprovementOpportunity]
                  ) -> ImprovementOpportunity | None:
    """An open opportunity of the same component and incident whose evidence names the cause, when `opp`
    is the group's generic one (an error rate) — else None."""
    group = GROUPS.get(opp.problem_type, "")
    if opp.problem_type not in GENERIC.get(group, ()) or not opp.affected_components:
        return None
    for o in others:
        if o.tenant_id == opp.tenant_id and o.status == "open" and o.problem_type in SPECIFIC.get(group, ()) \
                and o.affected_components[:1] == opp.affected_components[:1] and _concurrent(opp, o):
            return o
    return None


def demand_only(opp: ImprovementOpportunity, others: Sequence[ImprovementOpportunity]) -> bool:
    """A throughput change of a component that shows no saturation at the same time (no concurrent
    latency or error opportunity of its own): the demand moved (traffic rose or fell), which no knob of
    the service answers — more workers for fewer requests change nothing but cost. Acted on once the
    service also slows down or fails."""
    if opp.problem_type != "throughput" or not opp.affected_components:
        return False
    return not any(o.tenant_id == opp.tenant_id and o.status in ("open", "in_progress")
                   and o.affected_components[:1] == opp.affected_components[:1]
                   and GROUPS.get(o.problem_type) in ("latency", "errors") and _concurrent(opp, o)
                   for o in others)


def cause_first(ranked: Sequence[ImprovementOpportunity],
                context: Sequence[ImprovementOpportunity] | None = None) -> list[ImprovementOpportunity]:
    """`ranked` (in priority order) with every opportunity explained by another one's larger deviation
    moved behind the others, and a specific opportunity moved in front of its component's generic one.
    Stable otherwise. `context`: every opportunity of the window in any status (default `ranked`)."""
    pool = ranked if context is None else context
    out: list[ImprovementOpportunity] = []
    deferred: list[ImprovementOpportunity] = []
    seen: set[str] = set()
    for o in ranked:
        if o.opportunity_id in seen:
            continue
        if likely_cause(o, pool) is not None:
            deferred.append(o)
            continue
        specific = more_specific(o, ranked)
        for x in ([specific] if specific is not None else []) + [o]:
            if x.opportunity_id not in seen:
                out.append(x)
                seen.add(x.opportunity_id)
    return out + [o for o in deferred if o.opportunity_id not in seen]
