"""The one-hop metric stage: raw metric envelopes deduplicated and scored on the partition owning their series.

raw envelope ─▶ decode once, dead-letter bad records ─▶ points of series this partition owns:
dedup ─▶ clean topic (one batched write, header kaizen-hop: scored) ─▶ detector + trend rules ─▶
insights, users, healing; points of series owned elsewhere are forwarded once to their owner on the
raw topic (header kaizen-hop: forwarded). The clean topic keeps its readers (metrics tap, MCP, docs);
scoring no longer reads it back, except for records some other producer wrote there, which are
checked and forwarded to their owner like any other point. Design and figures: docs/throughput.md.
"""

from __future__ import annotations

import base64
import time
from bisect import bisect_right
from collections.abc import Awaitable
from operator import itemgetter
from typing import Any

import faust
import numpy as np
import orjson
import structlog

from agents.healing.agent import healing
from agents.ingest.agent import LIMITS, persist_in_background, send_dead_letter, start_dedup_store
from agents.ingest.agent import STATS as INGEST_STATS
from agents.ingest.logic.dedup import DedupWindow, apply_dedup_delta, dedup_delta, id_hashes
from agents.routing import insight_partition
from agents.scoring.admission import split_admitted
from agents.scoring.agent import (
    CHECKPOINT_EVERY_POINTS,
    CHECKPOINT_EVERY_SECONDS,
    STATS,
    PartitionModels,
    ScoringState,
    clean_points,
    dead_letter_over_cap,
    send_users,
)
from agents.scoring.logic.detector_kernel import warm
from agents.scoring.logic.detectors import ANOMALY_THRESHOLD
from agents.scoring.logic.hops import FORWARDED, FROM_CLEAN, HOP_HEADER, SCORED, hop_of, split_by_owner
from agents.scoring.logic.models import CheckpointTooLarge
from agents.scoring.logic.series import (
    SeriesModel,
    anomaly_insight,
    checkpoint_columns,
    checkpoints_due,
    score_groups,
    trend_insight,
)
from agents.scoring.logic.trend_kernel import warm as warm_trends
from agents.scoring.logic.vectorised import DetectorColumns
from streams import app as A
from streams.codec import dead_letter, encode_lean, split_encoded
from streams.commits import CaughtUp
from streams.contract import metric_violation
from streams.metric_codec import LeanPoint, to_model
from streams.metric_columns import decode_metric_columns
from streams.metrics import DUPLICATES_DROPPED, INSIGHTS_GENERATED, SCORING_POINTS, TELEMETRY_PROCESSED
from streams.records import DeadLetter, TelemetryInsight
from streams.state import ChangelogStore, OversizedDelta, start_agent_store

log = structlog.get_logger(__name__)



class Stores:
    """The stage's two changelog stores (dedup windows, detector checkpoints), both following the raw topic."""

    def __init__(self, dedup: ChangelogStore[DedupWindow], scoring: ScoringState) -> None:
        self.dedup = dedup
        self.scoring = scoring


_stores: dict[str, Stores] = {}


async def stores() -> Stores:
    s = _stores.get("s")
    if s is None:
        warm()  # the detector's and the trend rules' compiled loops, loaded before the first message
        warm_trends()
        dedup = await start_dedup_store("metric")
        detectors: ChangelogStore[dict[str, Any]] = await start_agent_store(
            "detectors", A.raw_topics["metric"].get_topic_name())
        s = _stores["s"] = Stores(dedup, ScoringState(detectors))
    return s


def held_to_limits(points: list[LeanPoint], now: float) -> tuple[list[LeanPoint], list[DeadLetter]]:
    """Points that came as lean points (forwarded by a raw partition, or from the clean topic) held to the
    ingest contract's limits like a raw record (identifier and dimension lengths, plausible times): anyone
    producing to the raw topic can set the forwarded header, so these limits are checked where the points
    enter a detector, not trusted from the hop before. The points of a record that breaks one are
    dead-lettered with the rule, as the raw decoder does."""
    kept: list[LeanPoint] = []
    dead: list[DeadLetter] = []
    topic = A.raw_topics["metric"].get_topic_name()
    for p in points:
        why = metric_violation(p, now, LIMITS)
        if why is None:
            kept.append(p)
        else:
            dead.append(dead_letter(why, orjson.dumps(p).decode(), source_topic=topic))
    return kept, dead


_EVENT_ID = itemgetter("event_id")


def fresh_points(window: DedupWindow, points: list[LeanPoint], now: float
                 ) -> tuple[list[LeanPoint], dict[str, Any] | None]:
    """The points whose event id is new in the window, and the dedup delta admitting them (applied in
    memory at once; changelogged by the caller once the points' effects are on the broker)."""
    hashes = id_hashes(list(map(_EVENT_ID, points)))
    flags = window.filter_new(hashes, now)
    fresh: list[LeanPoint]
    fresh_hashes: list[int]
    if False not in flags:  # the usual message: nothing seen before, no per-point sorting out
        fresh, fresh_hashes = points, hashes
    else:
        fresh, fresh_hashes = [], []
        for p, h, new in zip(points, hashes, flags, strict=True):
            if new:
                fresh.append(p)
                fresh_hashes.append(h)
            else:
                DUPLICATES_DROPPED.labels(p["tenant_id"], "metric").inc()
                INGEST_STATS["duplicates"][f"{p['tenant_id']}/metric"] += 1
    TELEMETRY_PROCESSED.labels("metric").inc(len(fresh))
    INGEST_STATS["processed"]["metric"] += len(fresh)
    if not fresh_hashes:
        return fresh, None
    delta = dedup_delta(fresh_hashes, now)
    apply_dedup_delta(window, delta)  # later copies in this worker are dropped from now on
    return fresh, delta


async def send_points(topic: faust.TopicT, points: list[LeanPoint], partition: int, hop: bytes,
                      source_partition: int, source_offset: int) -> list[Awaitable[Any]]:
    """Points as envelopes below KAIZEN_MAX_MESSAGE_BYTES to one partition of `topic`; a point too large
    for a message alone is dead-lettered (never dropped)."""
    limit = A.settings.kaizen_max_message_bytes
    messages, too_big = split_encoded(points, encode_lean, limit)
    sends = [await topic.send(value=data, partition=partition, headers={HOP_HEADER: hop}) for data in messages]
    for p in too_big:
        body = encode_lean([p])
        await send_dead_letter("metric", dead_letter(
            f"record too large: its clean form is {len(body)} bytes, more than KAIZEN_MAX_MESSAGE_BYTES ({limit})",
            body.decode("utf-8", errors="backslashreplace"), source_topic=A.raw_topics["metric"].get_topic_name(),
            partition=source_partition, offset=source_offset))
    return sends


async def forward(groups: dict[int, list[LeanPoint]], hop: bytes, partition: int, offset: int) -> None:
    """Points of series owned by other partitions, to their owners on the raw topic (their only extra hop)."""
    for owner, pts in groups.items():
        await send_points(A.raw_topics["metric"], pts, owner, hop, partition, offset)
        STATS["forwarded_points"] += len(pts)


async def emit(insights: list[TelemetryInsight]) -> list[Awaitable[Any]]:
    sends: list[Awaitable[Any]] = []
    for ins in insights:
        sends.append(await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                                 partition=insight_partition(ins, A.settings.kafka_topic_partitions)))
        INSIGHTS_GENERATED.labels(ins.source).inc()
        STATS["insights"] += 1
    return sends


def columns_of(pm: PartitionModels) -> DetectorColumns:
    """The columnar detector of a partition's models (vectorised.py): every series scored by kaizen's
    default detector is a row of it, new ones created there; series configured with another River model
    keep their own scorer."""
    cols = pm.columns
    if cols is None:
        cols = pm.columns = DetectorColumns(capacity=max(64, len(pm.checkpoints)))
    return cols


def _timestamp(p: LeanPoint) -> float:
    return float(p["timestamp"])


async def score_batch(state: ScoringState, partition: int, points: list[LeanPoint],
                      now: float) -> list[TelemetryInsight]:
    """Score then learn each point (per series in time order); checkpoint due series; return the
    insights to emit. The points of every kaizen-scored series are scored in one columnar call (the
    k-th point of each series in one numpy step, same scores as KaizenDetector.score_learn), their trend
    rules and bookkeeping in columns too (series.py score_groups). Insight models are built only for the
    rare point that makes one."""
    pm = await state.models(partition)
    cols = columns_of(pm)
    insights: list[TelemetryInsight] = []
    due: dict[str, str] = {}
    by_series: dict[str, list[LeanPoint]] = {}
    points, over = split_admitted(pm.admission, points)
    if over:
        await dead_letter_over_cap(partition, over)
    for p in points:
        group = by_series.get(p["series"])
        if group is None:
            by_series[p["series"]] = [p]
        else:
            group.append(p)
    groups: list[tuple[str, list[LeanPoint], SeriesModel]] = []
    live = pm.models.get  # (a known series without a method call: this runs once per series of the message)
    for key, pts in by_series.items():
        if len(pts) > 1:
            pts.sort(key=_timestamp)
        groups.append((key, pts, live(key) or pm.get(key, pts[0]["metric_name"], pts[0].get("unit", ""))))
    models = [model for _, _, model in groups]
    scores, found = score_groups(cols, [(model, pts) for _, pts, model in groups])
    threshold = ANOMALY_THRESHOLD
    ends = np.fromiter(map(len, by_series.values()), np.int64, len(groups)).cumsum()
    # only the rare points with an alarm or a trend finding are visited, in index order (a point's
    # anomaly insight before its trend insights, as the points come)
    marks = np.flatnonzero(scores >= threshold).tolist()
    if marks or found:
        bounds = ends.tolist()
        for i in sorted(set(marks).union(found)):
            g = bisect_right(bounds, i)
            _, pts, model = groups[g]
            p = pts[i - bounds[g] + len(pts)]
            if scores[i] >= threshold and not p.get("history"):  # history: read back at discovery, no insight
                insights.append(anomaly_insight(to_model(p), float(scores[i]), model, now))
            for f in found.get(i, ()):
                insights.append(trend_insight(to_model(p), f, model, now))
    # Checkpoints and summaries: the due series and the summaries let out found for the whole batch at
    # once (series.checkpoints_due, ScoringState.publishable), only those visited.
    cps = pm.checkpoints
    keys = [key for key, _, _ in groups]
    unsaved = [i for i, key in enumerate(keys) if key not in cps]
    todo = checkpoints_due(models, now, CHECKPOINT_EVERY_POINTS, CHECKPOINT_EVERY_SECONDS)
    if unsaved:
        todo = sorted(set(todo).union(unsaved))
    for g, data in zip(todo, checkpoint_columns([models[g] for g in todo], now), strict=True):
        key = keys[g]
        if data is None:  # a series outside the columns (another River model...): on its own
            try:
                data = models[g].checkpoint(now, A.settings.kaizen_detector_checkpoint_max_bytes)
            except CheckpointTooLarge as exc:  # scored on in memory; after a restart this series re-warms
                STATS["checkpoints_over_limit"] += 1
                log.error("detector checkpoint over its size limit; not checkpointed", series=key, error=str(exc))
                continue
        due[key] = base64.b64encode(data).decode()
    # a series' last score is its last point's (model.last_score)
    for g in state.publishable(keys, scores[ends - 1] >= threshold, now):
        key, pts, model = groups[g]
        await A.series_topic.send(key=key.encode(), value=orjson.dumps(model.summary(key, pts[-1])))
    if due:
        try:
            await state.store.record(partition, {"set": due})
        except OversizedDelta as exc:  # kept in memory; after a restart these series re-warm
            STATS["checkpoints_too_large"] += len(exc.keys)
            log.warning("detector checkpoints too large for a changelog message", series=exc.keys[:3],
                        count=len(exc.keys))
    SCORING_POINTS.inc(len(points))
    STATS["points"] += len(points)
    return insights


async def process(st: Stores, value: bytes | None, headers: Any, partition: int, offset: int, now: float) -> None:
    """One message of the raw metric topic, end to end."""
    hop = hop_of(headers)
    nparts = A.settings.kafka_topic_partitions
    if hop in (FORWARDED, FROM_CLEAN):  # written by kaizen to this, their owner partition: lean points
        points, dead = clean_points(value)
        points, beyond = held_to_limits(points, now)
        for dl in dead + beyond:
            dl.partition, dl.offset = partition, offset
            await send_dead_letter("metric", dl)
        # (anyone can set the header: a point of a series owned elsewhere goes on to its owner, so a series
        # is never scored on two partitions)
        owned, foreign = split_by_owner(points, partition, nparts)
        if foreign:
            await forward(foreign, hop, partition, offset)
    else:
        topic_name = A.raw_topics["metric"].get_topic_name()
        decoded = decode_metric_columns(value, topic=topic_name, partition=partition, offset=offset, now=now,
                                      limits=LIMITS)
        for dl in decoded.dead:
            await send_dead_letter("metric", dl)
        owned, foreign = split_by_owner(decoded.records, partition, nparts)
        if foreign:
            await forward(foreign, FORWARDED, partition, offset)
    if not owned:
        return
    window = await st.dedup.state(partition)
    fresh, delta = fresh_points(window, owned, now)
    if not fresh:
        return
    sends: list[Awaitable[Any]] = []
    if hop != FROM_CLEAN:
        sends += await send_points(A.clean_topics["metric"], fresh, partition, SCORED, partition, offset)
    try:
        insights = await score_batch(st.scoring, partition, fresh, now)
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:  # no input may stop the stage
        log.error("points not scorable; dead-lettered", error=f"{type(exc).__name__}: {exc}"[:300],
                  partition=partition, offset=offset)
        await send_dead_letter("metric", dead_letter(
            f"not scorable: {type(exc).__name__}: {exc}"[:500], encode_lean(fresh).decode(),
            source_topic=A.raw_topics["metric"].get_topic_name(), partition=partition, offset=offset))
        insights = []
    sends += await emit(insights)
    await send_users(st.scoring, fresh)
    await healing().observe(fresh)
    if delta is not None:  # changelogged once the points and insights it admitted are on the broker
        persist_in_background(st.dedup, partition, delta, sends, window)


# The end of a backlog is committed at once on both topics of the stage, not at the next commit tick
# (streams/commits.py); one instance, since a commit takes every acked offset of the worker.
early_commits = CaughtUp(A.app)


@A.app.agent(A.raw_topics["metric"], name="metric-path")
async def metric_path(stream: faust.StreamT[bytes]) -> None:
    st = await stores()
    async for event in stream.events():
        msg = event.message
        await process(st, event.value, msg.headers, msg.partition, msg.offset, time.time())
        early_commits.handled(msg.tp, msg.offset)


@A.app.agent(A.clean_topics["metric"], name="clean-metric-guard")
async def clean_guard(stream: faust.StreamT[bytes]) -> None:
    """Records on the clean topic that the one-hop stage did not write (another producer's): checked,
    the bad ones dead-lettered, the good ones forwarded to their owner to be deduplicated and scored."""
    topic_name = A.clean_topics["metric"].get_topic_name()
    async for event in stream.events():
        msg = event.message
        if hop_of(msg.headers) == SCORED:
            early_commits.handled(msg.tp, msg.offset)
            continue
        points, dead = clean_points(event.value)
        for dl in dead:
            dl.partition, dl.offset = msg.partition, msg.offset
            log.warning("clean metric record is no metric point; dead-lettered", reason=dl.reason,
                        partition=dl.partition, offset=dl.offset)
            await A.deadletter_topic.send(key=topic_name.encode(), value=dl.to_bytes())
        if points:
            _owned, groups = split_by_owner(points, -1, A.settings.kafka_topic_partitions)
            await forward(groups, FROM_CLEAN, msg.partition, msg.offset)
        early_commits.handled(msg.tp, msg.offset)
