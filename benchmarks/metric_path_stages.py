"""CPU µs per point by stage of the one-hop metric path, in process (no broker): what a worker spends
on each step of a raw envelope, and on the whole stage (agents.scoring.fused.process: the steps, healing,
users, summaries, checkpoints); what is left for Faust and Kafka is the worker's CPU per point minus that.
The collector is tuned as in a worker (kaizen/worker.py tune_gc): at CPython's default thresholds its
walks over the live detectors landed on whichever step allocated, ~2.5 µs per point on decoding alone.

    python -m benchmarks.metric_path_stages [--quick] [--per-point]   (--per-point: the per-point decoder)
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from agents.ingest.logic.dedup import DedupWindow, apply_dedup_delta, dedup_delta, id_hash
from agents.ingest.logic.dedup import warm as warm_dedup
from agents.scoring.logic.detector_kernel import warm
from agents.scoring.logic.hops import split_by_owner
from agents.scoring.logic.series import SeriesModel, observe_groups
from agents.scoring.logic.trend_kernel import warm as warm_trends
from agents.scoring.logic.vectorised import DetectorColumns
from benchmarks.common import METRIC_PARTITIONS, keyed_envelopes, metric_points, warm_load
from kaizen.worker import tune_gc
from streams.codec import decode_metrics_lean, encode_lean
from streams.contract import Limits
from streams.metric_columns import decode_metric_columns

PARTITIONS = METRIC_PARTITIONS


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def run(quick: bool = False, columnar: bool = True) -> dict[str, Any]:
    before = gc.get_threshold()
    tune_gc()
    try:
        return _run(quick, columnar)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _run(quick: bool, columnar: bool) -> dict[str, Any]:
    warm()  # the detector's, trend rules' and dedup table's compiled loops, loaded before the clock as a worker loads
    warm_dedup()  # them at start
    warm_trends()
    points, series = (100_000, 1_000) if quick else (1_000_000, 10_000)
    base = metric_points(points, series)
    now = float(max(p["timestamp"] for p in base)) + 60.0
    # the envelopes pipeline_throughput produces: each raw partition's points of the series it owns
    msgs = [(partition, raw) for partition, part in enumerate(keyed_envelopes(base, 1000)) for raw in part]
    limits = Limits()
    decode: Callable[..., Any] = decode_metric_columns if columnar else decode_metrics_lean
    window = DedupWindow(300.0)
    models: dict[str, SeriesModel] = {}
    old_models: dict[str, SeriesModel] = {}
    cols = DetectorColumns()
    per_point_scoring = 0.0
    cost = {"decode_check_ids": 0.0, "owner_split": 0.0, "dedup": 0.0, "clean_encode": 0.0,
            "group_by_series": 0.0, "detector_and_trends": 0.0}
    for partition, raw in msgs:
        dt, decoded = _timed(partial(decode, raw, topic="t", now=now, limits=limits))
        cost["decode_check_ids"] += dt
        dt, _ = _timed(partial(split_by_owner, decoded.records, partition, PARTITIONS))
        cost["owner_split"] += dt
        recs = decoded.records

        def dedup(recs: list[dict[str, Any]] = recs) -> list[dict[str, Any]]:
            hashes = [id_hash(p["event_id"]) for p in recs]
            flags = window.filter_new(hashes, now)
            fresh = [p for p, f in zip(recs, flags, strict=True) if f]
            apply_dedup_delta(window, dedup_delta([h for h, f in zip(hashes, flags, strict=True) if f], now))
            return fresh

        dt, fresh = _timed(dedup)
        cost["dedup"] += dt
        dt, _ = _timed(partial(encode_lean, fresh))
        cost["clean_encode"] += dt

        def group(f: list[dict[str, Any]] = fresh) -> dict[str, list[dict[str, Any]]]:
            by: dict[str, list[dict[str, Any]]] = {}
            for p in f:
                g = by.get(p["series"])
                if g is None:
                    by[p["series"]] = [p]
                else:
                    g.append(p)
            return by

        dt, by_series = _timed(group)
        cost["group_by_series"] += dt

        def score(by: dict[str, list[dict[str, Any]]] = by_series) -> None:
            # the live path (agents/scoring/fused.py): columnar detector, then trends per point
            groups = []
            for key, pts in by.items():
                if len(pts) > 1:
                    pts.sort(key=lambda p: float(p["timestamp"]))
                m = models.get(key)
                if m is None:
                    m = models[key] = SeriesModel.new(pts[0]["metric_name"])
                groups.append((m, pts))
            observe_groups(cols, groups)

        def score_per_point(by: dict[str, list[dict[str, Any]]] = by_series) -> None:
            for key, pts in by.items():
                m = old_models.get(key)
                if m is None:
                    m = old_models[key] = SeriesModel.new(pts[0]["metric_name"])
                for p in pts:
                    m.observe(p["timestamp"], p["value"], False)

        dt, _ = _timed(score)
        cost["detector_and_trends"] += dt
        dt, _ = _timed(score_per_point)
        per_point_scoring += dt
    per_point = {k: round(v / points * 1e6, 3) for k, v in cost.items()}
    # the least disturbed of three runs: on this shared machine one run can take half as long again
    whole_runs = [asyncio.run(_whole_stage(points, series)) for _ in range(3)]
    return {"benchmark": "metric_path_stages", "points": points, "series": series,
            "whole_stage_cpu_us_per_point": min(whole_runs), "whole_stage_runs": whole_runs,
            "whole_stage": "agents.scoring.fused.process, the stage's own code (the steps below and healing, users, "
                           "series summaries, checkpoints), over the envelopes pipeline_throughput produces, under "
                           "streams.testing.AgentHarness: every send captured, stores in memory; what a worker spends "
                           "beyond it is Faust, aiokafka, its consumer thread and the machine it shares",
            "decoder": "columnar" if columnar else "per point",
            "detector": "columnar (vectorised.py) for detector_and_trends",
            "detector_and_trends_per_point_us": round(per_point_scoring / points * 1e6, 3),
            "detector_and_trends_per_point": "the same points through SeriesModel.observe per point (the "
                                             "per-series KaizenDetector), same run, not in the total",
            "cpu_us_per_point": per_point, "total_cpu_us_per_point": round(sum(per_point.values()), 3)}


async def _whole_stage(points: int, series: int) -> float:
    """CPU µs per point of the stage's own function, everything it calls included, without a broker."""
    # (imported here: the stage's module starts the worker's app objects, which the steps above do not need)
    from agents.ingest.agent import background_writes_done
    from agents.scoring import fused
    from streams.testing import AgentHarness

    load = keyed_envelopes(metric_points(points, series), 1000)
    async with AgentHarness(partitions=len(load)):
        st = await fused.stores()
        now = time.time()
        for partition, msgs in enumerate(warm_load()):  # series of another tenant, as the worker is warmed
            for offset, raw in enumerate(msgs):
                await fused.process(st, raw, None, partition, offset, now)
        t0 = time.process_time()
        for partition, msgs in enumerate(load):
            for offset, raw in enumerate(msgs, start=1_000):
                await fused.process(st, raw, None, partition, offset, time.time())
        await background_writes_done()  # the dedup deltas' changelog writes, made in the background
        cpu = time.process_time() - t0
        fused._stores.clear()  # the next run starts from empty stores
    return round(cpu / points * 1e6, 3)


if __name__ == "__main__":
    print(orjson.dumps(run(quick="--quick" in sys.argv, columnar="--per-point" not in sys.argv),
                       option=orjson.OPT_INDENT_2).decode())
