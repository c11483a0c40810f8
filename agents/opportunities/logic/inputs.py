"""What the opportunities stage learns from other stages (users per hour, outcomes), folded into a context (pure).

Every worker reads every input (all partitions of `opportunities.inputs`), so the context an opportunity
is scored with does not depend on which worker owns what. Inputs are folded so the result does not depend
on their order either: users per hour keeps the value of the latest observation (by the point's own time,
ties to the larger value) and outcomes are counted once per input id; opportunities already scored are
refreshed when an input changes their context (see refresh()).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import contains, itemgetter
from typing import Any

from agents.opportunities.logic.opportunities import (
    CHANGE_KIND,
    OpportunityContext,
    OutcomeStats,
    outcome_factor,
    penalty,
    rescore,
    users_for,
)
from streams.records import ImprovementOpportunity, OpportunityInput

USERS = "~in|u|"  # keys of the folded inputs
OUTCOME = "~in|o|"
PREFIX = "~in|"


def users_from_point(point: Mapping[str, Any], users_metric: str, users_dimension: str) -> float | None:
    """Users per hour carried by a metric point (a lean point, see streams/metric_codec.py), if any."""
    if point["metric_name"] == users_metric:
        return float(point["value"])
    dims = point["dimensions"]
    if users_dimension in dims:
        try:
            return float(dims[users_dimension])
        except ValueError:
            return None
    return None


def users_carriers(points: Sequence[Mapping[str, Any]], users_metric: str,
                   users_dimension: str) -> Sequence[Mapping[str, Any]]:
    """The points of a batch users_from_point may find users in, in order: of the users metric (tested
    once per distinct metric name) or carrying the users dimension; for every other point it gives None.
    Almost no point carries users, so this one pass spares a call per point. Should a point fail the
    test (a field missing...), the whole batch is returned: users_from_point then fails on that point,
    after the same points before it."""
    try:
        if users_metric in set(map(_METRIC_NAME, points)):
            return [p for p in points if p["metric_name"] == users_metric or users_dimension in p["dimensions"]]
        # (the usual batch has no carrier: found out without a Python step per point)
        if not any(map(contains, map(_DIMENSIONS, points), repeat(users_dimension))):
            return []
        return [p for p in points if users_dimension in p["dimensions"]]
    except Exception:  # noqa: BLE001 - users_from_point meets it point by point, where the reference does
        return points


_METRIC_NAME = itemgetter("metric_name")
_DIMENSIONS = itemgetter("dimensions")


def input_delta(state: Mapping[str, Any], inp: OpportunityInput) -> dict[str, Any] | None:
    """The store delta that folds an input in, or None when it changes nothing (older or already seen)."""
    if inp.kind == "users":
        key = f"{USERS}{inp.tenant_id}|{inp.component}"
        new = [inp.observed_at, inp.users_per_hour]
        old = state.get(key)
        if old is not None and (old[0], old[1]) >= (new[0], new[1]):
            return None
        return {"set": {key: new}}
    key = f"{OUTCOME}{inp.input_id}"
    if key in state:
        return None
    return {"set": {key: [inp.problem_type, inp.change_kind, inp.outcome]}}


def context_from_state(state: Mapping[str, Any], base: OpportunityContext) -> OpportunityContext:
    """The partition's context: the settings of `base` with the users and outcomes folded in the state."""
    users: dict[tuple[str, str], float] = {}
    outcomes: dict[tuple[str, str], OutcomeStats] = {}
    for key, val in state.items():
        if key.startswith(USERS):
            tenant, _, component = key[len(USERS):].partition("|")
            users[(tenant, component)] = float(val[1])
            users[(tenant, "*")] = max(float(val[1]), users.get((tenant, "*"), 0.0))
        elif key.startswith(OUTCOME):
            family, kind, outcome = val
            s = outcomes.setdefault((family, kind), OutcomeStats())
            s.kept += outcome == "kept"
            s.rolled_back += outcome == "rolled_back"
            s.failed += outcome == "failed"
    return OpportunityContext(users_metric=base.users_metric, users_dimension=base.users_dimension,
                              users_per_hour=users, default_users_per_hour=base.default_users_per_hour,
                              evidence_limit=base.evidence_limit, decay_hours=base.decay_hours, outcomes=outcomes)


def affected(raw_opps: Iterable[Mapping[str, Any]], inp: OpportunityInput) -> list[Mapping[str, Any]]:
    """The opportunities (as stored) whose score an input may change."""
    out = []
    for raw in raw_opps:
        if raw.get("status") not in ("open", "in_progress"):
            continue
        if inp.kind == "users":
            if raw.get("tenant_id") == inp.tenant_id:
                out.append(raw)
        else:
            kind = raw.get("proposed_changes", {}).get("kind")
            if raw.get("problem_type") == inp.problem_type and kind == inp.change_kind:
                out.append(raw)
    return out


def refresh(opp: ImprovementOpportunity, ctx: OpportunityContext) -> ImprovementOpportunity:
    """The opportunity rescored with the partition's current context: users per hour of its component and
    the learned outcome factor (confidence and outcome adjustment), as fold_insight would give now."""
    if not opp.telemetry_evidence:
        return opp
    family = opp.problem_type
    kind = str(opp.proposed_changes.get("kind", CHANGE_KIND.get(family, ("feature_flag",))[0]))
    factor = outcome_factor(ctx.outcomes, family, kind)
    evidence = opp.telemetry_evidence
    confidence = min(1.0, max(0.0, sum(e.confidence_score for e in evidence) / len(evidence) * factor))
    users = users_for(evidence[-1], opp.tenant_id, opp.affected_components[0], ctx)
    updated = opp.model_copy(update={
        "affected_users_per_hour": users, "confidence_score": round(confidence, 6),
        "outcome_adjustment": round(factor * penalty(opp.proposed_changes.get("previous_outcomes")), 6)})
    return rescore(updated)
