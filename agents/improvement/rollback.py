"""The `rolling_back` phase and the journal reconciliation: no applied change is ever abandoned.

Rolling back undoes every change of the improvement — what its deployment recorded (canary and full
rollout) plus whatever the applied-changes journal holds for it (a partial rollout that crashed before
its event was written) — newest first, each through the actuator that applied it, each verified by a
read-back (agents/improvement/undo.py). Actuator, network and broker errors are retried with
exponential backoff (ROLLBACK_BACKOFF_*) for as long as it takes; a worker that dies meanwhile leaves
the improvement in `rolling_back`, which its successor resumes. A target someone else changed since
kaizen wrote it is left as it is and the improvement pauses as `conflict`.

Reconciliation compares the journal's outstanding changes with the folded improvement states (on
start, then every RECONCILE_EVERY_SECONDS): an improvement nobody knows any more at two passes in a row
(its events were lost with a reset broker or topic) gets a `rolling_back` event that opens its state again (the fold accepts
a start after a gap); one that finished without undoing a change has it undone here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from agents.improvement.logic.lifecycle import is_terminal, new_event, next_event
from agents.improvement.rollout import deployed_changes
from agents.improvement.stepctx import StepContext
from agents.improvement.undo import undo
from connectors.actuators.base import AppliedChange
from streams.errors import InputError
from streams.records import ImprovementEvent, ImprovementExecution

log = structlog.get_logger(__name__)
ROLLBACK_BACKOFF_FIRST = 0.5  # seconds before the first retry of a failed undo, doubled each time
ROLLBACK_BACKOFF_MAX = 30.0
RECONCILE_EVERY_SECONDS = 5.0
RECONCILE_GRACE_SECONDS = 10.0  # after start, the views and stores are given this long to catch up
RECOVERY_SEQUENCE = 1_000_000  # event sequence of a recovery event: always "after a gap" for the fold


async def changes_to_undo(ctx: StepContext, ex: ImprovementExecution) -> list[AppliedChange]:
    """The deployment's changes plus the journal's outstanding ones of this improvement (undo order)."""
    out = deployed_changes(ex)
    keys = {c.key for c in out}
    if ctx.journal is not None:
        journal = ctx.journal
        extra = (await asyncio.to_thread(journal.outstanding)).get(ex.improvement_id, [])
        # journal-only changes (applied, event never written): the full rollout's before the canary's
        out.extend(sorted((c for c in extra if c.key not in keys), key=lambda c: c.target == "canary"))
    return out


async def undo_all(ctx: StepContext, ex: ImprovementExecution, changes: list[AppliedChange],
                   sleep: Callable[[float], Any] = asyncio.sleep) -> tuple[list[str], list[str], int]:
    """Undo each change until it is verified back; returns (undone keys, conflicting keys, retries)."""
    undone: list[str] = []
    conflicts: list[str] = []
    retries = 0
    delay = ROLLBACK_BACKOFF_FIRST
    for change in changes:
        while True:
            try:
                outcome = await undo(ctx.actuator_of(change), change)
                break
            except asyncio.CancelledError:
                raise
            except InputError as exc:  # an unsafe key: nothing could be written there, nor undone; a person looks
                log.error("rollback refused for an unsafe key", improvement=ex.improvement_id, key=change.key,
                          error=str(exc)[:300])
                outcome = "conflict"
                break
            except Exception as exc:  # noqa: BLE001 - whatever the target store answers, the target must get back:
                # retried with backoff (the improvement stays visible in rolling_back meanwhile)
                retries += 1
                log.warning("rollback step failed; retrying", improvement=ex.improvement_id, key=change.key,
                            error=f"{type(exc).__name__}: {exc}"[:300], retry_in=delay, retries=retries)
                await sleep(delay)
                delay = min(delay * 2, ROLLBACK_BACKOFF_MAX)
        delay = ROLLBACK_BACKOFF_FIRST
        (undone if outcome == "undone" else conflicts).append(change.key)
        await ctx.journal_append(outcome, change, ex.tenant_id)
    return undone, conflicts, retries


async def step_rolling_back(ctx: StepContext, ex: ImprovementExecution) -> list[ImprovementEvent]:
    """Undo everything, then `rolled_back` (verdict rollback), `failed` (undone, but the improvement
    failed: inconclusive, a step error, a lost state) or `conflict` (some targets left as others set them)."""
    changes = await changes_to_undo(ctx, ex)
    undone, conflicts, retries = await undo_all(ctx, ex, changes)
    now = ctx.clock()
    rollback = {"undone": undone, "conflicts": conflicts, "retries": retries, "verified": True,
                "at": now.timestamp()}
    if conflicts:
        return [next_event(ex, "conflict", now, data={"rollback": rollback, "conflicts": conflicts},
                           reason="rolled back except targets changed by someone else since kaizen wrote them, "
                                  "left as they set them: " + ", ".join(conflicts))]
    status = "rolled_back" if ex.verdict == "rollback" else "failed"
    started = next((h for h in reversed(ex.history) if h.status == "rolling_back"), None)
    reason = (started.reason if started else "") or "rolled back"
    # the outcome carries the verdict that started the rollback (readers of the terminal event need it)
    carried = {k: v for k, v in (started.data if started else {}).items()
               if k in ("verdict", "degradation", "monitoring_metrics")}
    if started is not None and "assessment" in started.data:
        carried["impact"] = started.data["assessment"]
    return [next_event(ex, status, now, reason=f"{reason} (every change undone and verified)",  # type: ignore[arg-type]
                       data={**carried, "rollback": rollback})]


class Reconciler:
    """Compares the journal with the known improvement states; see the module docstring."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.last_run = 0.0
        self.missing: set[str] = set()  # unknown at the last pass: rolled back if still unknown at this one

    def soon(self) -> None:
        """Run at the next supervisor tick (after the start grace): a reset was detected."""
        self.last_run = 0.0

    def due(self, now: float) -> bool:
        return now - self.started >= RECONCILE_GRACE_SECONDS and now - self.last_run >= RECONCILE_EVERY_SECONDS

    async def run(self, ctx: StepContext, known: Callable[[str], ImprovementExecution | None]
                  ) -> list[ImprovementEvent]:
        """One pass: events to emit for lost improvements; finished ones' leftovers undone in place."""
        self.last_run = time.monotonic()
        if ctx.journal is None:
            return []
        journal = ctx.journal
        outstanding = await asyncio.to_thread(journal.outstanding)
        events: list[ImprovementEvent] = []
        missing, self.missing = self.missing, set()
        for imp, changes in sorted(outstanding.items()):
            ex = known(imp)
            if ex is None and imp not in missing:
                self.missing.add(imp)  # two passes in a row, so a state still on its way is not taken for lost
            elif ex is None:
                tenant = await asyncio.to_thread(journal.tenant_of, imp)
                log.warning("improvement state lost with changes still applied: rolling back", improvement=imp,
                            keys=[c.key for c in changes])
                canary = [c.as_dict() for c in changes if c.target == "canary"]
                full = [c.as_dict() for c in changes if c.target != "canary"]
                events.append(new_event(imp, "rolling_back", datetime.now(UTC), actor="kaizen",
                                        reason="state lost (broker or topic reset?) with changes still applied",
                                        data={"deployment": {"stage": "recovered", "canary": canary, "full": full},
                                              "verdict": "state_lost"},
                                        sequence=RECOVERY_SEQUENCE, tenant_id=tenant))
            elif is_terminal(ex.status):
                await self._finish_leftovers(ctx, ex, changes)
        return events

    async def _finish_leftovers(self, ctx: StepContext, ex: ImprovementExecution,
                                changes: list[AppliedChange]) -> None:
        """A finished improvement's change still outstanding: a completed one keeps its full rollout;
        anything else (a canary key, a change of a failed or rolled-back improvement) is undone."""
        for change in changes:
            if ex.status == "completed" and change.target != "canary":
                await ctx.journal_append("kept", change, ex.tenant_id)
                continue
            try:
                outcome = await undo(ctx.actuator_of(change), change)
            except Exception as exc:  # noqa: BLE001 - tried again at the next pass
                log.warning("leftover change not undone yet", improvement=ex.improvement_id, key=change.key,
                            error=str(exc)[:300])
                continue
            log.info("leftover change of a finished improvement", improvement=ex.improvement_id, key=change.key,
                     outcome=outcome, status=ex.status)
            await ctx.journal_append(outcome, change, ex.tenant_id)
