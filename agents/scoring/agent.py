"""Anomaly scoring: one online detector and trend tracker per series, checkpointed, → insights (run by fused.py)."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Sequence
from time import time as wall_clock
from typing import Any

import numpy as np
import orjson
import structlog
from aiokafka.errors import KafkaError

from agents.opportunities.agent import context as opportunity_context
from agents.opportunities.agent import send_input
from agents.opportunities.logic.inputs import users_carriers, users_from_point
from agents.routing import insight_partition
from agents.scoring.admission import Admission, per_partition_cap
from agents.scoring.logic.registry import DetectorChoice, is_kaizen, parse_detectors
from agents.scoring.logic.series import SeriesModel
from agents.scoring.logic.vectorised import DetectorColumns
from streams import app as A
from streams.codec import dead_letter, encode_lean, split_encoded
from streams.contract import DEADLETTER_ORIGINAL_CHARS
from streams.metric_codec import LeanPoint, trusted_lean
from streams.metrics import INSIGHTS_GENERATED
from streams.records import DeadLetter, OpportunityInput, TelemetryInsight
from streams.state import ChangelogStore, OversizedDelta

log = structlog.get_logger(__name__)

# Checkpoint a series after this many points or seconds, whichever first: bounded changelog
# volume (not one model per point) while a restart loses at most this much history.
CHECKPOINT_EVERY_POINTS = 50
CHECKPOINT_EVERY_SECONDS = 30.0
SERIES_PUBLISH_SECONDS = 2.0
SERIES_PUBLISH_BUDGET = 200  # series summaries per second per worker, for the dashboard/read model (each
# costs a Faust send, ~100–200 µs here: 500/s took a tenth of a busy worker)

STATS: dict[str, int] = defaultdict(int)


class PartitionModels:
    """The live models of one partition, created lazily from the checkpoints in the store."""

    def __init__(self, checkpoints: dict[str, Any], cap: int, total_cap: int | None = None) -> None:
        self.checkpoints = checkpoints
        self.models: dict[str, SeriesModel] = {}
        self.admission = Admission(cap, checkpoints, total_cap)  # a series is checkpointed when admitted
        # the columns new series of kaizen's detector are created in (set by the metric stage, fused.py)
        self.columns: DetectorColumns | None = None

    def get(self, key: str, metric_name: str, unit: str = "") -> SeriesModel:
        m = self.models.get(key)
        if m is None:
            cp = self.checkpoints.get(key)
            spec = detector_choice().spec_for(metric_name, unit)
            if not cp and self.columns is not None and is_kaizen(spec):
                m = SeriesModel.new_in_columns(metric_name, self.columns, spec)
            else:
                m = SeriesModel.new(metric_name, spec)
            if cp:
                try:
                    m = SeriesModel.restore(metric_name, base64.b64decode(cp), spec)
                except ValueError as exc:  # a checkpoint of another detector version: start this series afresh
                    log.warning("detector checkpoint not restorable", series=key, error=str(exc))
            self.models[key] = m
        return m


class ScoringState:
    def __init__(self, store: ChangelogStore[dict[str, Any]]) -> None:
        self.store = store
        self.partitions: dict[int, PartitionModels] = {}
        self.last_publish: dict[str, float] = {}
        self.budget_second = 0
        self.budget_used = 0
        self.users_sent: dict[tuple[str, str], float] = {}
        _STATES.append(self)

    async def models(self, partition: int) -> PartitionModels:
        pm = self.partitions.get(partition)
        if pm is None or not self.store.loaded(partition):
            checkpoints = await self.store.state(partition)
            parts = A.settings.kafka_topic_partitions
            pm = PartitionModels(checkpoints, per_partition_cap(A.settings.scoring_max_series_per_tenant, parts),
                                 per_partition_cap(A.settings.scoring_max_series, parts))
            self.partitions[partition] = pm
        return pm

    def forget(self, partitions: set[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)
        self.store.forget(partitions)

    def may_publish(self, key: str, now: float, urgent: bool) -> bool:
        sec = int(now)
        if sec != self.budget_second:
            self.budget_second, self.budget_used = sec, 0
        # (the budget first: under load it is spent within the second, and no key is looked up then)
        if not urgent and (self.budget_used >= SERIES_PUBLISH_BUDGET
                           or now - self.last_publish.get(key, 0.0) < SERIES_PUBLISH_SECONDS):
            return False
        self.budget_used += 1
        self.last_publish[key] = now
        return True

    def publishable(self, keys: Sequence[str], urgent: np.ndarray, now: float) -> list[int]:
        """The indices of `keys` (series of one batch, `urgent` their flags) whose summary may_publish lets
        out now, as calling it on each in order would: called key by key only while the second's budget
        lasts; once it is spent only the urgent keys can go out, and only they are visited."""
        if not keys:
            return []
        if int(now) != self.budget_second:
            self.budget_second, self.budget_used = int(now), 0
        out: list[int] = []
        i, n = 0, len(keys)
        while i < n and self.budget_used < SERIES_PUBLISH_BUDGET:
            if self.may_publish(keys[i], now, bool(urgent[i])):
                out.append(i)
            i += 1
        for j in (np.flatnonzero(urgent[i:]) + i).tolist():
            self.may_publish(keys[j], now, True)
            out.append(j)
        return out


async def dead_letter_over_cap(partition: int, over: list[LeanPoint]) -> None:
    """Points of series beyond their tenant's cap: dead-lettered (reason "series cap"), each dead letter's
    original an envelope of whole points that fits uncut."""
    by_tenant: dict[str, list[LeanPoint]] = defaultdict(list)
    for p in over:
        by_tenant[p["tenant_id"]].append(p)
    topic = A.clean_topics["metric"].get_topic_name()
    cap = A.settings.scoring_max_series_per_tenant
    for tenant, pts in by_tenant.items():
        chunks, _ = split_encoded(pts, encode_lean, DEADLETTER_ORIGINAL_CHARS // 2)
        for chunk in chunks:
            dl = dead_letter(f"series cap: tenant {tenant[:80]} is at SCORING_MAX_SERIES_PER_TENANT ({cap}, "
                             f"{per_partition_cap(cap, A.settings.kafka_topic_partitions)} in this partition) or the "
                             f"partition at its share of SCORING_MAX_SERIES ({A.settings.scoring_max_series}); "
                             f"points of new series are not scored", chunk.decode(), source_topic=topic,
                             partition=partition)
            await A.deadletter_topic.send(key=topic.encode(), value=dl.to_bytes())
        STATS["series_cap_points"] += len(pts)
        STATS["series_cap_deadletters"] += len(chunks)


async def send_users(state: ScoringState, points: list[LeanPoint]) -> None:
    """Users per hour seen in the points, to the opportunities stage through Kafka (when it changed).
    Only the rare points that may carry users (users_carriers: one pass over the batch) are read."""
    users_metric, users_dimension = opportunity_context.users_metric, opportunity_context.users_dimension
    for p in users_carriers(points, users_metric, users_dimension):
        users = users_from_point(p, users_metric, users_dimension)
        if users is None:
            continue
        key = (p["tenant_id"], p["component"])
        if state.users_sent.get(key) == users:
            continue
        state.users_sent[key] = users
        await send_input(OpportunityInput(kind="users", input_id=f"u|{key[0]}|{key[1]}|{p['timestamp']}|{users}",
                                          tenant_id=key[0], component=key[1], users_per_hour=users,
                                          observed_at=float(p["timestamp"])))


_STATES: list[ScoringState] = []  # every scoring state of this worker: checkpointed when partitions move
REVOKE_CHECKPOINT_SECONDS = 10.0  # a rebalance does not wait longer for them (broker away: re-warm instead)


async def checkpoint_revoked(revoked: set[Any], now: float) -> int:
    """Before partitions move to another worker, the detectors that learned since their last checkpoint
    are checkpointed and on the broker, so the new owner goes on where this one stopped instead of
    re-warming up to CHECKPOINT_EVERY_POINTS points of each series. Returns how many were written."""
    written = 0
    for state in _STATES:
        for partition in {tp.partition for tp in revoked if tp.topic == state.store.source_topic}:
            pm = state.partitions.pop(partition, None)
            if pm is None:
                continue
            due = {k: base64.b64encode(m.checkpoint(now)).decode() for k, m in pm.models.items() if m.since_cp > 0}
            if not due:
                continue
            try:
                futures = await state.store.append(partition, {"set": due})
                await asyncio.wait_for(asyncio.gather(*futures), REVOKE_CHECKPOINT_SECONDS)
                written += len(due)
            except (OversizedDelta, KafkaError, TimeoutError) as exc:
                log.warning("detectors of a revoked partition not checkpointed; they re-warm on the new owner",
                            partition=partition, series=len(due), error=str(exc)[:200])
    if written:
        log.info("detectors checkpointed on revocation", series=written)
    return written


@A.app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _checkpoint_on_revoke(sender: Any, revoked: set[Any], **_: Any) -> None:
    await checkpoint_revoked(revoked, wall_clock())


async def emit_insights(insights: list[TelemetryInsight]) -> None:
    for ins in insights:
        await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                    partition=insight_partition(ins, A.settings.kafka_topic_partitions))
        INSIGHTS_GENERATED.labels(ins.source).inc()
        STATS["insights"] += 1


def clean_points(value: bytes | None) -> tuple[list[LeanPoint], list[DeadLetter]]:
    """The points of one clean-topic message (dedup writes envelopes of lean points, taken as they are;
    a record of another shape is checked) and a dead letter for what is no point (hand-made records)."""
    topic = A.clean_topics["metric"].get_topic_name()
    if not value:
        return [], []
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        STATS["not_points"] += 1
        return [], [dead_letter("not valid JSON (on the clean topic)", value.decode("utf-8", errors="backslashreplace"),
                                error=str(exc), source_topic=topic)]
    items = raw.get("records", [raw]) if isinstance(raw, dict) else [raw]
    out: list[LeanPoint] = []
    dead: list[DeadLetter] = []
    for it in items if isinstance(items, list) else [items]:
        p = trusted_lean(it)
        if p is None:
            STATS["not_points"] += 1
            dead.append(dead_letter("not a metric point (on the clean topic)", orjson.dumps(it).decode(),
                                    source_topic=topic))
            continue
        out.append(p)
    return out, dead





_choice: dict[str, DetectorChoice] = {}


def detector_choice() -> DetectorChoice:
    """KAIZEN_DETECTORS, parsed once (the command line already refused an invalid one at start)."""
    c = _choice.get("c")
    if c is None:
        c = _choice["c"] = parse_detectors(A.settings.kaizen_detectors)
    return c

# The agents that run these (one hop from the raw topic) are in agents/scoring/fused.py.
