"""Anomaly scoring agent: one online detector and trend tracker per series, checkpointed, → insights."""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from typing import Any

import faust
import orjson
import structlog
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from agents.healing import healing
from agents.logic.detectors import ANOMALY_THRESHOLD
from agents.logic.series import SeriesModel, anomaly_insight, trend_insight
from agents.opportunities import context as opportunity_context
from agents.routing import insight_partition
from streams import app as A
from streams.metrics import INSIGHTS_GENERATED, SCORING_POINTS
from streams.records import MetricDataPoint, TelemetryInsight
from streams.runtime import runtime
from streams.state import ChangelogStore, kv_apply, kv_init

log = structlog.get_logger(__name__)

# Checkpoint a series after this many points or seconds, whichever first: bounded changelog
# volume (not one model per point) while a restart loses at most this much history.
CHECKPOINT_EVERY_POINTS = 50
CHECKPOINT_EVERY_SECONDS = 30.0
SERIES_PUBLISH_SECONDS = 2.0
SERIES_PUBLISH_BUDGET = 500  # series summaries per second per worker, for the dashboard/read model

STATS: dict[str, int] = defaultdict(int)


class PartitionModels:
    """The live models of one partition, created lazily from the checkpoints in the store."""

    def __init__(self, checkpoints: dict[str, Any]) -> None:
        self.checkpoints = checkpoints
        self.models: dict[str, SeriesModel] = {}

    def get(self, key: str, metric_name: str) -> SeriesModel:
        m = self.models.get(key)
        if m is None:
            cp = self.checkpoints.get(key)
            m = SeriesModel.new(metric_name)
            if cp:
                try:
                    m = SeriesModel.restore(metric_name, base64.b64decode(cp))
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

    async def models(self, partition: int) -> PartitionModels:
        pm = self.partitions.get(partition)
        if pm is None or not self.store.loaded(partition):
            checkpoints = await self.store.state(partition)
            pm = PartitionModels(checkpoints)
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
        if not urgent and (now - self.last_publish.get(key, 0.0) < SERIES_PUBLISH_SECONDS
                           or self.budget_used >= SERIES_PUBLISH_BUDGET):
            return False
        self.budget_used += 1
        self.last_publish[key] = now
        return True


async def score_batch(state: ScoringState, partition: int, points: list[MetricDataPoint],
                      now: float) -> list[TelemetryInsight]:
    """Score then learn each point; checkpoint due series; return the insights to emit."""
    pm = await state.models(partition)
    insights: list[TelemetryInsight] = []
    due: dict[str, str] = {}
    touched: dict[str, tuple[MetricDataPoint, SeriesModel]] = {}
    by_series: dict[str, list[MetricDataPoint]] = defaultdict(list)
    for p in points:
        by_series[p.series_key()].append(p)
    for key, pts in by_series.items():
        pts.sort(key=lambda x: x.timestamp)
        model = pm.get(key, pts[0].metric_name)
        for p in pts:
            ts = p.timestamp.timestamp()
            score, findings = model.observe(ts, p.value)
            if score >= ANOMALY_THRESHOLD:
                insights.append(anomaly_insight(p, score, model, now))
            for f in findings:
                insights.append(trend_insight(p, f, model, now))
        touched[key] = (pts[-1], model)
        if model.due_checkpoint(now, CHECKPOINT_EVERY_POINTS, CHECKPOINT_EVERY_SECONDS):
            due[key] = base64.b64encode(model.checkpoint(now)).decode()
    if due:
        await state.store.record(partition, {"set": due})
    SCORING_POINTS.inc(len(points))
    STATS["points"] += len(points)
    for key, (last, model) in touched.items():
        if state.may_publish(key, now, urgent=model.last_score >= ANOMALY_THRESHOLD):
            await A.series_topic.send(key=key.encode(), value=orjson.dumps(model.summary(key, last)))
    return insights


async def emit_insights(insights: list[TelemetryInsight]) -> None:
    for ins in insights:
        await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                    partition=insight_partition(ins, A.settings.kafka_topic_partitions))
        INSIGHTS_GENERATED.labels(ins.source).inc()
        STATS["insights"] += 1


class _CleanEnvelope(TypedDict):
    records: list[MetricDataPoint]


_ENVELOPE = TypeAdapter(_CleanEnvelope)


def clean_points(value: bytes | None) -> list[MetricDataPoint]:
    """The points of one clean-topic message: dedup writes envelopes, parsed and validated in one
    pydantic-core call straight from the bytes; anything else takes the record-by-record path."""
    if not value:
        return []
    try:
        return _ENVELOPE.validate_json(value)["records"]
    except ValidationError:
        raw = orjson.loads(value)
        items = raw.get("records", [raw]) if isinstance(raw, dict) else []
        return [MetricDataPoint.model_validate(it) for it in items]


_state: dict[str, ScoringState] = {}


def scoring_state() -> ScoringState | None:
    return _state.get("s")


@A.app.agent(A.clean_topics["metric"], name="anomaly-scoring")
async def scoring(stream: faust.StreamT[bytes]) -> None:
    state = _state.get("s")
    if state is None:
        store: ChangelogStore[dict[str, Any]] = ChangelogStore(
            "detectors", f"{A.settings.kaizen_app_id}.state.detectors", runtime.bootstrap,
            A.settings.kafka_topic_partitions, kv_init, kv_apply)
        store.source_topic = A.clean_topics["metric"].get_topic_name()  # type: ignore[attr-defined]
        await store.start()
        runtime.stores.append(store)
        state = _state["s"] = ScoringState(store)
    async for event in stream.events():
        points = clean_points(event.value)
        insights = await score_batch(state, event.message.partition, points, time.time())
        await emit_insights(insights)
        for p in points:
            opportunity_context.observe(p)
        await healing().observe(points)
