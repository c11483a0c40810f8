"""Rolling a change out through an actuator (journalled first) and checking kaizen still owns its targets."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import structlog

from agents.improvement.logic.lifecycle import next_event
from agents.improvement.stepctx import StepContext, component_of, plan_from_dict
from agents.improvement.undo import owned
from connectors.actuators.base import Actuator, AppliedChange, applied, encode_value, logical_key
from streams.records import ImprovementEvent, ImprovementExecution

log = structlog.get_logger(__name__)


async def _apply_one(ctx: StepContext, ex: ImprovementExecution, act: Actuator, key: str, value: str,
                     target: str | None) -> AppliedChange:
    """Journal the change (with the value read just before, or the journal's first one on a re-run),
    apply it, journal the result. The change carries its actuator's name and its previous value."""
    name = act.full_key(key, target)
    found, previous = (await asyncio.to_thread(ctx.journal.first_previous, ex.improvement_id, name)) \
        if ctx.journal is not None else (False, None)
    if not found:
        previous = await act.read(name)
    intent = dataclasses.replace(applied(name, previous, value, ex.improvement_id, target), actuator=act.name)
    if not found:
        await ctx.journal_append("intent", intent, ex.tenant_id)
    done = await act.apply(key, value, ex.improvement_id, target=target)
    # the previous value is the one read before the first write (the actuator's own record agrees, or
    # knows better after a crash between two of its writes)
    result = dataclasses.replace(done, actuator=act.name, previous=done.previous if done.noop else previous)
    await ctx.journal_append("applied", result, ex.tenant_id)
    return result


async def apply_plan(ctx: StepContext, ex: ImprovementExecution, target: str | None) -> list[dict[str, Any]]:
    p = plan_from_dict(ex.plan)
    comp = component_of(ex)
    changes: list[AppliedChange] = []
    for c in p.changes:
        changes.append(await _apply_one(ctx, ex, ctx.actuator, logical_key(ex.tenant_id, comp, c.parameter),
                                        encode_value(c.new), target))
    if p.files and ctx.files_actuator is not None and target is None:
        for path, code in sorted(p.files.items()):
            changes.append(await _apply_one(ctx, ex, ctx.files_actuator, path, code, None))
    return [a.as_dict() for a in changes]


def deployed_changes(ex: ImprovementExecution) -> list[AppliedChange]:
    """The changes the deployment recorded, in undo order: the full rollout, then the canary, newest first."""
    dep = ex.deployment
    return [AppliedChange.from_dict(raw) for raw in [*reversed(dep.get("full", [])), *reversed(dep.get("canary", []))]]


OWNERSHIP_CHECK_SECONDS = 5.0  # how often monitoring re-reads its targets (a hand-made change -> conflict)
_checked_at: dict[str, float] = {}


async def changed_by_others(ctx: StepContext, ex: ImprovementExecution, force: bool = False) -> list[str]:
    """Keys of the deployment someone else changed since kaizen wrote them (read at most every
    OWNERSHIP_CHECK_SECONDS unless `force`)."""
    t = time.monotonic()
    if not force and t - _checked_at.get(ex.improvement_id, 0.0) < OWNERSHIP_CHECK_SECONDS:
        return []
    _checked_at[ex.improvement_id] = t
    out = []
    full_stage = ex.deployment.get("stage") == "full"
    for change in deployed_changes(ex):
        current = await ctx.actuator_of(change).read(change.key)
        if full_stage and change.target == "canary" and current == change.previous:
            # the canary key is dropped by kaizen itself as the last step before `completed`: a check re-run
            # after that (a worker killed before the event was written, or resumed before it was folded) must
            # finish the completion, not call kaizen's own removal someone else's change
            continue
        if not owned(current, change):
            out.append(change.key)
    return out


def conflict_event(ctx: StepContext, ex: ImprovementExecution, keys: list[str]) -> list[ImprovementEvent]:
    return [next_event(ex, "conflict", ctx.clock(), reason="changed by someone else since kaizen wrote it, "
                       "left as they set it: " + ", ".join(keys), data={"conflicts": keys})]


