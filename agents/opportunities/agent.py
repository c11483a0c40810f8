"""Opportunities agent: the one writer of each opportunity — insights folded in, decayed, published."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import faust
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.opportunities.logic.inputs import affected, context_from_state, input_delta, refresh
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
from streams.metrics import OPPORTUNITIES_UPDATED
from streams.records import ImprovementOpportunity, OpportunityInput, TelemetryInsight
from streams.runtime import runtime, survives_broker_outage
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
# Users per hour and learned outcomes are read by every worker from ALL partitions of
# opportunities.inputs (a group-less consumer, like the MCP read model): the context an opportunity is
# scored with is then the same whichever worker owns it, and needs no co-partitioning (Faust assigns the
# partitions of two topics independently). The topic is the log this context is rebuilt from.
_inputs: dict[str, Any] = {}
_ctx: dict[str, OpportunityContext] = {"c": context}


def current_context() -> OpportunityContext:
    return _ctx["c"]


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


async def send_input(inp: OpportunityInput) -> None:
    """An input for the opportunities stage (every worker reads all of them; key: its subject)."""
    key = f"{inp.tenant_id}|{inp.component or inp.problem_type}"
    await A.opportunity_inputs_topic.send(key=key.encode(), value=inp.to_bytes())


async def _refresh(partition: int, book: dict[str, Any], oids: list[str], now: datetime) -> int:
    """Rescore these opportunities of a partition with the current context; publish those that changed."""
    changed = 0
    for oid in oids:
        raw = book.get(oid)  # read now: the agent may have folded an insight in meanwhile
        if raw is None:
            continue
        opp = ImprovementOpportunity.model_validate(raw)
        new = decay(refresh(opp, current_context()), now, current_context())
        if (abs(new.impact_score - opp.impact_score) > 1e-9 or new.affected_users_per_hour != opp.affected_users_per_hour
                or new.confidence_score != opp.confidence_score):
            await publish(partition, new)
            changed += 1
    return changed


async def fold_input(inp: OpportunityInput, now: datetime) -> int:
    """Fold an input into this worker's context; rescore the opportunities it concerns in the partitions
    this worker holds. Returns how many were republished."""
    delta = input_delta(_inputs, inp)
    if delta is None:
        return 0
    _inputs.update(delta["set"])
    _ctx["c"] = context_from_state(_inputs, context)
    s = _store.get("s")
    if s is None:
        return 0
    changed = 0
    for partition, book in s.loaded_states().items():
        oids = [str(raw["opportunity_id"]) for raw in affected(list(book.values()), inp)]
        changed += await _refresh(partition, book, oids, now)
    return changed


async def handle_insight(partition: int, insight: TelemetryInsight, now: datetime) -> ImprovementOpportunity | None:
    s = await store()
    was_loaded = s.loaded(partition)
    book = await s.state(partition)
    if not was_loaded:  # rebuilt (start, rebalance): inputs that came while nobody held it apply now
        await _refresh(partition, book, list(book), now)
    ctx = current_context()
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


@A.app.task
async def follow_inputs() -> None:
    """Read every partition of opportunities.inputs from the beginning and keep following it."""
    await follow(runtime.bootstrap, A.opportunity_inputs_topic.get_topic_name())


async def follow(bootstrap: str, topic: str, poll_ms: int = 300) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", metadata_max_age_ms=5000)
    await consumer.start()
    assigned: set[TopicPartition] = set()
    try:
        while True:
            try:
                parts = consumer.partitions_for_topic(topic) or set()
                want = {TopicPartition(topic, p) for p in parts}
                if want - assigned:  # new partitions (or the topic appeared): from their beginning
                    consumer.assign(sorted(want))
                    await consumer.seek_to_beginning(*sorted(want - assigned))
                    assigned = want
                batches = await consumer.getmany(timeout_ms=poll_ms, max_records=2000)
            except KafkaError as exc:
                log.warning("opportunity inputs not readable; retrying", error=str(exc)[:200])
                await asyncio.sleep(1.0)
                continue
            for msgs in batches.values():
                for m in msgs:
                    try:
                        inp = OpportunityInput.from_bytes(m.value or b"")
                    except ValueError as exc:
                        log.error("invalid record on opportunities.inputs", error=str(exc)[:300])
                        continue
                    await fold_input(inp, datetime.now(UTC))
            if not assigned:
                await asyncio.sleep(1.0)
    finally:
        await consumer.stop()


@A.app.timer(interval=60.0)
@survives_broker_outage
async def decay_opportunities() -> None:
    """Lower the score of opportunities that stopped recurring; close them after the decay period."""
    s = _store.get("s")
    if s is None:
        return
    now = datetime.now(UTC)
    started = time.monotonic()
    ctx = current_context()
    for partition, book in s.loaded_states().items():
        for raw in list(book.values()):
            opp = ImprovementOpportunity.model_validate(raw)
            new = decay(opp, now, ctx)
            if new.status != opp.status or abs(new.impact_score - opp.impact_score) > 1e-9:
                await publish(partition, new)
    log.debug("decay pass", seconds=round(time.monotonic() - started, 3))
