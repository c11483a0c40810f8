"""Lines per second of PatternMiner.add, with plain drain3 (defaults) on the same lines as the anchor.

Lines: the Content column of the LogHub-2k samples (see benchmarks/loghub_quality.py for the
LogHub citation), all eight datasets interleaved so the miner sees a mixed stream. Both miners are
timed in the same process, alternating rounds, and the best round of each is kept: the ratio
ours/drain3 is what carries over between machines, the absolute figure is for this machine only.

Usage: python -m benchmarks.pattern_throughput [--quick]   (KAIZEN_LOGHUB_DIR overrides the data dir)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from agents.patterns.logic.templates import PatternMiner
from benchmarks.loghub_quality import DATASETS, _contents, loghub_dir


def _lines() -> list[str]:
    per = [_contents(loghub_dir() / n / f"{n}_2k.log_structured.csv") for n in DATASETS]
    # Round-robin interleave: a realistic mixed stream, not eight easy sorted runs.
    return [batch[i] for i in range(max(map(len, per))) for batch in per if i < len(batch)]


def _time_ours(lines: list[str]) -> float:
    miner = PatternMiner()
    add = miner.add
    start = time.perf_counter()
    for line in lines:
        add(line)
    return time.perf_counter() - start


def _time_drain3(lines: list[str]) -> float:
    from drain3 import TemplateMiner  # benchmark-only anchor
    from drain3.template_miner_config import TemplateMinerConfig

    miner = TemplateMiner(config=TemplateMinerConfig())
    add = miner.add_log_message
    start = time.perf_counter()
    for line in lines:
        add(line)
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    lines = _lines()
    if quick:
        lines = lines[:4000]
    rounds = 2 if quick else 5
    timers: dict[str, Callable[[list[str]], float]] = {"kaizen": _time_ours, "drain3_default": _time_drain3}
    best = {name: float("inf") for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            best[name] = min(best[name], timer(lines))
    ours = len(lines) / best["kaizen"]
    anchor = len(lines) / best["drain3_default"]
    return {
        "benchmark": "pattern_throughput",
        "metric": "PatternMiner.add lines/s (fresh miner, LogHub-2k contents interleaved, best of rounds)",
        "lines": len(lines),
        "rounds": rounds,
        "lines_per_s": round(ours),
        "anchor_drain3_default_lines_per_s": round(anchor),
        "ratio_vs_drain3_default": round(ours / anchor, 3),
        "python": platform.python_version(),
        "quick": quick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4000 lines, 2 rounds")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=1))


if __name__ == "__main__":
    main()
