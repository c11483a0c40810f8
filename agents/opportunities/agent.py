"""Opportunities agent: the one writer of each opportunity — insights folded in, decayed, published."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import structlog

from agents.opportunities.logic.inputs import (
    PREFIX,
    affected,
    context_from_state,
    input_delta,
    refresh,
)
from agents.opportunities.logic.opportunities import (
    CHANGE_KIND,
    OpportunityContext,
    apply_outcome,
    decay,
    fold_insight,
    opportunity_id,
    problem_family,
)
from streams import app as A
from streams import topics as T
from streams.metrics import OPPORTUNITIES_UPDATED
from streams.records import ImprovementOpportunity, OpportunityInput, TelemetryInsight
from streams.runtime import survives_broker_outage
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)

OUTCOME = "improvement_outcome"  # an insight type carrying an improvement's outcome back to its opportunity
STATS: dict[str, int] = defaultdict(int)

# The settings part of every partition's context; users per hour and outcomes come from the
# opportunities.inputs topic and live in the partition's changelogged state (logic/inputs.py).
context = OpportunityContext(
    users_metric=A.settings.opportunity_users_metric,
    users_dimension=A.settings.opportunity_users_dimension,
    decay_hours=A.settings.opportunity_decay_hours,
)
_store: dict[str, ChangelogStore[dict[str, Any]]] = {}
_contexts: dict[int, OpportunityContext] = {}

# Insights and inputs on one channel: one agent, so one writer of each partition's opportunities; both
# topics have the same partition count, so Faust assigns partition p of both to the same worker.
channel = A.app.topic(T.INSIGHTS, T.OPPORTUNITY_INPUTS, key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw", partitions=A.settings.kafka_topic_partitions)


async def store() -> ChangelogStore[dict[str, Any]]:
    s = _store.get("s")
    if s is None:
        s = _store["s"] = await start_agent_store("opportunities", A.insights_topic.get_topic_name())
    return s


async def partition_context(partition: int) -> OpportunityContext:
    """The context of a partition, derived from its state (again after the state was rebuilt)."""
    s = await store()
    ctx = _contexts.get(partition)
    if ctx is None or not s.loaded(partition):
        ctx = _contexts[partition] = context_from_state(await s.state(partition), context)
    return ctx


async def publish(partition: int, opp: ImprovementOpportunity) -> None:
    s = await store()
    await s.record(partition, {"set": {opp.opportunity_id: opp.model_dump(mode="json")}})
    await A.opportunities_topic.send(key=opp.opportunity_id.encode(), value=opp.to_bytes())
    OPPORTUNITIES_UPDATED.inc()
    STATS["updates"] += 1


async def send_input(inp: OpportunityInput) -> None:
    """An input to every partition of the opportunities stage (it may concern any of them)."""
    value = inp.to_bytes()
    for p in range(A.settings.kafka_topic_partitions):
        await A.opportunity_inputs_topic.send(key=inp.input_id.encode(), value=value, partition=p)


async def handle_input(partition: int, inp: OpportunityInput, now: datetime) -> int:
    """Fold an input into the partition's context; rescore the opportunities it concerns. Returns how
    many were republished."""
    s = await store()
    book = await s.state(partition)
    delta = input_delta(book, inp)
    if delta is None:
        return 0
    await s.record(partition, delta)
    ctx = _contexts[partition] = context_from_state(book, context)
    changed = 0
    for raw in affected([v for k, v in book.items() if not k.startswith(PREFIX)], inp):
        opp = ImprovementOpportunity.model_validate(raw)
        new = decay(refresh(opp, ctx), now, ctx)
        if (abs(new.impact_score - opp.impact_score) > 1e-9 or new.affected_users_per_hour != opp.affected_users_per_hour
                or new.confidence_score != opp.confidence_score):
            await publish(partition, new)
            changed += 1
    return changed


async def handle_insight(partition: int, insight: TelemetryInsight, now: datetime) -> ImprovementOpportunity | None:
    s = await store()
    book = await s.state(partition)
    ctx = await partition_context(partition)
    if insight.insight_type == OUTCOME:
        oid = str(insight.evidence.get("opportunity_id", ""))
        raw = book.get(oid)
        if raw is None:
            return None
        opp = ImprovementOpportunity.model_validate(raw)
        outcome = insight.evidence.get("outcome", "failed")
        if outcome not in ("kept", "rolled_back", "failed"):
            outcome = "failed"
        if insight.insight_id in opp.proposed_changes.get("outcome_ids", []):
            return None  # a replayed outcome: already applied
        updated = apply_outcome(opp, outcome)
        updated.proposed_changes["outcome_ids"] = [*opp.proposed_changes.get("outcome_ids", []), insight.insight_id]
        await publish(partition, updated)
        kind = str(opp.proposed_changes.get("kind", CHANGE_KIND.get(opp.problem_type, ("feature_flag",))[0]))
        await send_input(OpportunityInput(kind="outcome", input_id=insight.insight_id, tenant_id=opp.tenant_id,
                                          problem_type=opp.problem_type, change_kind=kind, outcome=outcome))
        return updated
    oid = opportunity_id(insight.tenant_id, insight.affected_component, problem_family(insight))
    raw = book.get(oid)
    existing = ImprovementOpportunity.model_validate(raw) if raw is not None else None
    opp = fold_insight(existing, insight, now, ctx)
    if existing is not None and opp is existing:
        return None  # a replayed insight already folded in
    await publish(partition, opp)
    return opp


def decode(value: bytes | None) -> TelemetryInsight | OpportunityInput:
    """An insight or an input (told apart by their fields: the channel carries both topics)."""
    payload = orjson.loads(value or b"")
    if isinstance(payload, dict) and "input_id" in payload:
        return OpportunityInput.model_validate(payload)
    return TelemetryInsight.model_validate(payload)


@A.app.agent(channel, name="opportunities")
async def opportunities(stream: faust.StreamT[bytes]) -> None:
    await store()
    async for event in stream.events():
        try:
            rec = decode(event.value)
        except ValueError as exc:  # orjson and pydantic errors are ValueErrors
            log.error("invalid record on the insights / opportunities.inputs topic", error=str(exc)[:300])
            continue
        now = datetime.now(UTC)
        if isinstance(rec, OpportunityInput):
            await handle_input(event.message.partition, rec, now)
        else:
            await handle_insight(event.message.partition, rec, now)


@A.app.timer(interval=60.0)
@survives_broker_outage
async def decay_opportunities() -> None:
    """Lower the score of opportunities that stopped recurring; close them after the decay period."""
    s = _store.get("s")
    if s is None:
        return
    now = datetime.now(UTC)
    started = time.monotonic()
    for partition, book in s.loaded_states().items():
        ctx = await partition_context(partition)
        for key, raw in list(book.items()):
            if key.startswith(PREFIX):
                continue
            opp = ImprovementOpportunity.model_validate(raw)
            new = decay(opp, now, ctx)
            if new.status != opp.status or abs(new.impact_score - opp.impact_score) > 1e-9:
                await publish(partition, new)
    log.debug("decay pass", seconds=round(time.monotonic() - started, 3))
