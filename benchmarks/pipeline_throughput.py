"""End-to-end points/s of one worker (dedup + scoring + opportunities) beside a bare aiokafka consumer
and a bare Faust passthrough agent reading the same messages on the same broker in the same run."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks.common import (
    Stack,
    count_messages,
    embedded_stack,
    envelopes,
    metric_points,
    new_app_id,
    produce_fast,
    ratio,
    rss_mb,
    start_process,
    start_worker,
    wait_committed,
)
from streams import topics as T
from streams.state import ensure_topic

PARTITIONS = 4
PER_MESSAGE = 1000  # Faust's cost is per Kafka message: many points per message
TARGET_POINTS_PER_S = 100_000


async def _load(stack: Stack, points: int, series: int) -> dict[int, int]:
    """Create the topics and produce the load, spread evenly over the partitions; messages per partition."""
    for name in (T.RAW_TOPICS["metric"], T.CLEAN_TOPICS["metric"]):
        await ensure_topic(stack.bootstrap, name, PARTITIONS)
    msgs = envelopes(metric_points(points, series), PER_MESSAGE)
    per_part: dict[int, int] = {p: 0 for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        part_msgs = msgs[p::PARTITIONS]
        per_part[p] = await produce_fast(stack.bootstrap, T.RAW_TOPICS["metric"], part_msgs, partition=p)
    return per_part


async def bare_consumer(bootstrap: str, topic: str, expected_msgs: int) -> dict[str, Any]:
    """Anchor 1: aiokafka getmany + orjson decode of every message, nothing else."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_bytes=64 * 1024 * 1024,
                         max_partition_fetch_bytes=16 * 1024 * 1024)
    started = time.perf_counter()
    await c.start()
    msgs = pts = 0
    try:
        while msgs < expected_msgs and time.perf_counter() - started < 300:
            batch = await c.getmany(timeout_ms=500, max_records=1000)
            for records in batch.values():
                for m in records:
                    pts += len(orjson.loads(m.value)["records"])
                    msgs += 1
    finally:
        await c.stop()
    secs = time.perf_counter() - started
    return {"messages": msgs, "points": pts, "seconds": round(secs, 3), "points_per_s": round(pts / secs)}


async def _timed_group(stack: Stack, group: str, topic: str, want: dict[int, int], timeout: float
                       ) -> tuple[float, float] | None:
    """(first progress, all committed) monotonic times of a consumer group on a topic."""
    first = await wait_committed(stack.bootstrap, group, topic, {p: 1 for p, n in want.items() if n}, timeout,
                                 poll=0.02)
    if first is None:
        return None
    done = await wait_committed(stack.bootstrap, group, topic, want, timeout)
    return (first, done) if done is not None else None


def _faust_passthrough(stack: Stack, want: dict[int, int], points: int, timeout: float) -> dict[str, Any]:
    """Anchor 2: a Faust app whose agent only iterates the raw messages (this module, `passthrough`)."""
    app_id = new_app_id("bench-pass")
    proc = start_process(["-m", "benchmarks.pipeline_throughput", "passthrough"],
                         stack.env(app_id, PARTITIONS), "faust-passthrough")
    try:
        t = asyncio.run(_timed_group(stack, app_id, T.RAW_TOPICS["metric"], want, timeout))
    finally:
        proc.stop()
    if t is None:
        return {"status": "timeout", "log": str(proc.log_path)}
    secs = t[1] - t[0]
    return {"seconds": round(secs, 3), "points_per_s": round(points / secs),
            "messages_per_s": round(sum(want.values()) / secs)}


def _kaizen_worker(stack: Stack, want: dict[int, int], points: int, timeout: float) -> dict[str, Any]:
    app_id = new_app_id("bench-pipe")
    proc = start_worker(stack.env(app_id, PARTITIONS), "pipeline-worker")
    peak_rss = 0.0

    async def measure() -> dict[str, Any]:
        nonlocal peak_rss
        t = await _timed_group(stack, app_id, T.RAW_TOPICS["metric"], want, timeout)
        if t is None:
            return {"status": "timeout (dedup)"}
        peak_rss = max(peak_rss, rss_mb(proc.pid))
        clean = await count_messages(stack.bootstrap, T.CLEAN_TOPICS["metric"], PARTITIONS)
        done = await wait_committed(stack.bootstrap, app_id, T.CLEAN_TOPICS["metric"], clean, timeout)
        peak_rss = max(peak_rss, rss_mb(proc.pid))
        if done is None:
            return {"status": "timeout (scoring)", "clean_messages": clean}
        return {"dedup_seconds": round(t[1] - t[0], 3), "dedup_points_per_s": round(points / (t[1] - t[0])),
                "seconds": round(done - t[0], 3), "points_per_s": round(points / (done - t[0])),
                "clean_messages": sum(clean.values())}

    try:
        res = asyncio.run(measure())
    finally:
        proc.stop()
    res["worker_rss_mb"] = round(peak_rss, 1)
    return res


def run(quick: bool = False) -> dict[str, Any]:
    points = 100_000 if quick else 1_000_000
    series = 1_000 if quick else 10_000
    timeout = 120.0 if quick else 600.0
    with embedded_stack() as stack:
        want = asyncio.run(_load(stack, points, series))
        bare = asyncio.run(bare_consumer(stack.bootstrap, T.RAW_TOPICS["metric"], sum(want.values())))
        passthrough = _faust_passthrough(stack, want, points, timeout)
        kaizen = _kaizen_worker(stack, want, points, timeout)
    pps = kaizen.get("points_per_s", 0)
    return {
        "benchmark": "pipeline_throughput",
        "load": {"points": points, "series": series, "points_per_message": PER_MESSAGE,
                 "partitions": PARTITIONS, "workers": 1},
        "kaizen_worker": kaizen,
        "anchor_bare_aiokafka_decode": bare,
        "anchor_faust_passthrough": passthrough,
        "ratio_to_bare_consumer": ratio(pps, bare["points_per_s"]),
        "ratio_to_faust_passthrough": ratio(pps, passthrough.get("points_per_s", 0)),
        "target_points_per_s": TARGET_POINTS_PER_S,
        "meets_target": pps >= TARGET_POINTS_PER_S,
        "method": "load produced first; a Faust group's time runs from its first committed offset to all "
                  "committed on the raw topic (dedup) and then on the clean topic (scoring + opportunities)",
    }


def _passthrough_main() -> None:
    """A bare Faust app with one agent that only iterates the raw metric topic's messages."""
    import faust

    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    app = faust.App(os.environ["KAIZEN_APP_ID"], broker=";".join(f"kafka://{s}" for s in servers),
                    store="memory://", autodiscover=False, web_enabled=False, broker_session_timeout=6.0,
                    broker_heartbeat_interval=1.0, broker_commit_interval=0.5, consumer_auto_offset_reset="earliest",
                    topic_partitions=PARTITIONS, producer_acks=1, producer_linger=0.02)
    topic = app.topic(T.RAW_TOPICS["metric"], key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw", partitions=PARTITIONS)
    seen = {"n": 0}

    @app.agent(topic, name="passthrough")
    async def passthrough(stream: Any) -> None:
        async for _event in stream.events():
            seen["n"] += 1

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["passthrough"]:
        _passthrough_main()
    else:
        print(orjson.dumps(run(quick="--quick" in sys.argv), option=orjson.OPT_INDENT_2).decode())
