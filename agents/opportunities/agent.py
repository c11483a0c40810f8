"""Opportunities agent: the one writer of each opportunity — insights folded in, decayed, published."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import structlog

from agents.opportunities.logic.opportunities import (
    OpportunityContext,
    apply_outcome,
    decay,
    fold_insight,
    opportunity_id,
    problem_family,
    record_outcome,
)
from streams import app as A
from streams.metrics import OPPORTUNITIES_UPDATED
from streams.records import ImprovementOpportunity, TelemetryInsight
from streams.runtime import survives_broker_outage
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)

OUTCOME = "improvement_outcome"  # an insight type carrying an improvement's outcome back to its opportunity
STATS: dict[str, int] = defaultdict(int)

context = OpportunityContext(
    users_metric=A.settings.opportunity_users_metric,
    users_dimension=A.settings.opportunity_users_dimension,
    decay_hours=A.settings.opportunity_decay_hours,
)
_store: dict[str, ChangelogStore[dict[str, Any]]] = {}


async def store() -> ChangelogStore[dict[str, Any]]:
    s = _store.get("s")
    if s is None:
        s = _store["s"] = await start_agent_store("opportunities", A.insights_topic.get_topic_name())
    return s


async def publish(partition: int, opp: ImprovementOpportunity) -> None:
    s = await store()
    await s.record(partition, {"set": {opp.opportunity_id: opp.model_dump(mode="json")}})
    await A.opportunities_topic.send(key=opp.opportunity_id.encode(), value=opp.to_bytes())
    OPPORTUNITIES_UPDATED.inc()
    STATS["updates"] += 1


async def handle_insight(partition: int, insight: TelemetryInsight, now: datetime) -> ImprovementOpportunity | None:
    s = await store()
    book = await s.state(partition)
    if insight.insight_type == OUTCOME:
        oid = str(insight.evidence.get("opportunity_id", ""))
        raw = book.get(oid)
        if raw is None:
            return None
        opp = ImprovementOpportunity.model_validate(raw)
        outcome = insight.evidence.get("outcome", "failed")
        context.outcomes = record_outcome(context.outcomes, opp, outcome)
        updated = apply_outcome(opp, outcome)
        await publish(partition, updated)
        return updated
    oid = opportunity_id(insight.tenant_id, insight.affected_component, problem_family(insight))
    raw = book.get(oid)
    existing = ImprovementOpportunity.model_validate(raw) if raw is not None else None
    opp = fold_insight(existing, insight, now, context)
    if existing is not None and opp is existing:
        return None  # a replayed insight already folded in
    await publish(partition, opp)
    return opp


@A.app.agent(A.insights_topic, name="opportunities")
async def opportunities(stream: faust.StreamT[bytes]) -> None:
    await store()
    async for event in stream.events():
        try:
            insight = TelemetryInsight.from_bytes(event.value)
        except ValueError as exc:
            log.error("invalid insight on the insights topic", error=str(exc)[:300])
            continue
        await handle_insight(event.message.partition, insight, datetime.now(UTC))


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
        for raw in list(book.values()):
            opp = ImprovementOpportunity.model_validate(raw)
            new = decay(opp, now, context)
            if new.status != opp.status or abs(new.impact_score - opp.impact_score) > 1e-9:
                await publish(partition, new)
    log.debug("decay pass", seconds=round(time.monotonic() - started, 3))
