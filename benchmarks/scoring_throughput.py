"""Scoring throughput: points/s of KaizenDetector.score_many over many series, a same-run anchor, River's API path."""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from agents.scoring.logic.detector_kernel import warm
from agents.scoring.logic.detectors import KaizenDetector
from agents.scoring.logic.vectorised import DetectorColumns


class WelfordZ:
    """Anchor: the plainest per-series online z-score (Welford), same call shape as the detector."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def score_many(self, points: Sequence[tuple[float, float]]) -> list[float]:
        out = []
        n, mean, m2 = self.n, self.mean, self.m2
        for _, x in points:
            sd = math.sqrt(m2 / n) if n > 1 else 0.0
            out.append(min(1.0, abs(x - mean) / sd / 6.0) if sd > 0.0 else 0.0)
            n += 1
            d = x - mean
            mean += d / n
            m2 += d * (x - mean)
        self.n, self.mean, self.m2 = n, mean, m2
        return out


def _workload(series: int, rounds: int, batch: int, seed: int) -> list[list[list[tuple[float, float]]]]:
    """rounds x series batches of `batch` points (a Kafka message carries many points of one series)."""
    rng = random.Random(seed)
    out = []
    for r in range(rounds):
        row = []
        for s in range(series):
            t0 = 1_700_000_000.0 + 60.0 * batch * r
            base = 50.0 + s % 100
            row.append([(t0 + 60.0 * i, base + rng.gauss(0.0, 2.0)) for i in range(batch)])
        out.append(row)
    return out


def _time(factory: Any, work: list[list[list[tuple[float, float]]]], cpu: list[float] | None = None) -> float:
    """Wall seconds (CPU seconds appended to `cpu`)."""
    models = [factory() for _ in range(len(work[0]))]
    c0 = time.process_time()
    t0 = time.perf_counter()
    for row in work:
        for m, pts in zip(models, row, strict=True):
            m.score_many(pts)
    if cpu is not None:
        cpu.append(time.process_time() - c0)
    return time.perf_counter() - t0


def _columns_s(work: list[list[list[tuple[float, float]]]]) -> float:
    """CPU seconds of the columnar detector on the same points: one call per row of the workload (every
    series' `batch` points at once). The compiled loop is loaded first (a worker does it at start)."""
    warm()
    cols = DetectorColumns(capacity=len(work[0]))
    slots = [cols.new_slot() for _ in work[0]]
    calls = []
    for row in work:
        sl = np.array([s for s, pts in zip(slots, row, strict=True) for _ in pts], np.int64)
        ts = np.array([t for pts in row for t, _ in pts])
        vs = np.array([v for pts in row for _, v in pts])
        calls.append((sl, ts, vs))
    t0 = time.process_time()
    for sl, ts, vs in calls:
        cols.score_batch(sl, ts, vs)
    return time.process_time() - t0


def _river_api_us(series: list[list[tuple[float, float]]]) -> float:
    """µs per point through River's API on the same kind of series (best of 3)."""
    best = math.inf
    for _ in range(3):
        models = [KaizenDetector() for _ in series]
        t0 = time.perf_counter()
        for m, pts in zip(models, series, strict=True):
            for t, v in pts:
                x: dict[Hashable, Any] = {"value": v, "timestamp": t}
                m.score_one(x)
                m.learn_one(x)
        best = min(best, time.perf_counter() - t0)
    return best / sum(len(p) for p in series) * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    series, rounds, batch = (500, 4, 100) if quick else (2_000, 5, 100)
    work = _workload(series, rounds, batch, 1)
    n_points = series * rounds * batch
    # interleave and keep the best of 3 for both, so a noisy neighbour hurts both alike
    det_s, anchor_s, cols_s = math.inf, math.inf, math.inf
    det_cpu: list[float] = []
    for _ in range(3):
        anchor_s = min(anchor_s, _time(WelfordZ, work))
        det_s = min(det_s, _time(KaizenDetector, work, det_cpu))
        cols_s = min(cols_s, _columns_s(work))
    river_us = _river_api_us(work[0][:200])
    return {
        "benchmark": "scoring_throughput",
        "river_api_us_per_point": round(river_us, 3),
        "river_api": "score_one(x) then learn_one(x) per point (what a plain River program does); the live "
                     "agent uses the fused score_learn, same scores",
        "quick": quick,
        "series": series,
        "points": n_points,
        "batch_points_per_call": batch,
        "detector_points_per_s": round(n_points / det_s),
        "detector_us_per_point": round(det_s / n_points * 1e6, 3),
        "detector_cpu_us_per_point": round(min(det_cpu) / n_points * 1e6, 3),
        "columnar_us_per_point": round(cols_s / n_points * 1e6, 3),
        "columnar_points_per_s": round(n_points / cols_s),
        "columnar": "DetectorColumns.score_batch (agents/scoring/logic/vectorised.py: one compiled loop, "
                    "detector_kernel.py), same points and scores, CPU time (compare with detector_cpu_us_per_point); "
                    f"one call per {series} series x {batch} points",
        "anchor": "plain Welford z-score per series, same batches, same run",
        "anchor_points_per_s": round(n_points / anchor_s),
        "detector_cost_vs_anchor": round(det_s / anchor_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="500 series x 400 points instead of 2,000 x 500")
    print(json.dumps(run(quick=ap.parse_args().quick)))


if __name__ == "__main__":
    main()
