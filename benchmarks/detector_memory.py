"""Memory benchmark: bytes per live KaizenDetector (tracemalloc and RSS) and checkpoint size."""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import time
import tracemalloc
from typing import Any

from agents.scoring.logic.detectors import KaizenDetector
from agents.scoring.logic.trends import TrendTracker
from agents.scoring.logic.vectorised import DetectorColumns

TARGET_SERIES = 100_000
BUDGET_BYTES = 1 << 30


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; falls back to the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _feed(dets: list[KaizenDetector], points: int, seed: int) -> None:
    rng = random.Random(seed)
    for k, d in enumerate(dets):
        base = 100.0 + k % 50
        d.score_many([(1_700_000_000.0 + 60.0 * i, base + rng.gauss(0.0, 3.0)) for i in range(points)])


def run(quick: bool = False) -> dict[str, Any]:
    n = 10_000 if quick else TARGET_SERIES
    points = 20
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    dets = [KaizenDetector() for _ in range(n)]
    _feed(dets, points, 2)
    build_s = time.perf_counter() - t0
    rss_growth = _rss_bytes() - rss0
    per_series_rss = rss_growth / n

    del dets
    gc.collect()
    # tracemalloc on a sample (it slows allocation a lot); RSS above on the full population
    sample = 2_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    probe = [KaizenDetector() for _ in range(sample)]
    _feed(probe, points, 1)
    traced = (tracemalloc.get_traced_memory()[0] - before) / sample
    tracemalloc.stop()
    del probe
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    trackers = [TrendTracker() for _ in range(sample)]
    trend_traced = (tracemalloc.get_traced_memory()[0] - before) / sample
    tracemalloc.stop()
    del trackers

    # a detector past warm-up and grid freeze, to size a realistic checkpoint
    mature = KaizenDetector()
    _feed([mature], 2_000, 3)
    state = mature.to_state()
    t1 = time.perf_counter()
    for _ in range(2_000):
        KaizenDetector.from_state(state)
    restore_us = (time.perf_counter() - t1) / 2_000 * 1e6
    tracker_state = len(TrendTracker().to_state())
    # the columnar form (the live path's): one row of arrays per series, at full capacity
    cols = DetectorColumns(capacity=sample)
    for _ in range(sample):
        cols.new_slot()
    columnar_row = cols.nbytes() / sample
    extrapolated = per_series_rss * TARGET_SERIES
    return {
        "benchmark": "detector_memory",
        "quick": quick,
        "live_detectors": n,
        "points_fed_each": points,
        "bytes_per_series_tracemalloc": round(traced),
        "bytes_per_series_rss": round(per_series_rss),
        "trend_tracker_bytes_tracemalloc": round(trend_traced),
        "columnar_bytes_per_series": round(columnar_row),
        "columnar": "a series' row of DetectorColumns (vectorised.py), the live path's form of the detector; "
                    "capacity grows by half as series arrive, so up to 1.5 times this is allocated",
        "rss_growth_bytes": rss_growth,
        "rss_for_100k_series_bytes": round(extrapolated),
        "rss_for_100k_extrapolated": quick,
        "fits_1GiB_for_100k": extrapolated < BUDGET_BYTES,
        "target_bytes_per_series": 4096,
        "checkpoint_bytes": len(state),
        "trend_tracker_checkpoint_bytes": tracker_state,
        "restore_us_per_checkpoint": round(restore_us, 2),
        "build_and_feed_seconds": round(build_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 detectors, extrapolated to 100,000")
    print(json.dumps(run(quick=ap.parse_args().quick)))


if __name__ == "__main__":
    main()
