"""NAB files and the shared scorer in process: score candidates per file, evaluate any subset of corpora."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.data import bench_data

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
QUICK_CORPORA = ("artificialWithAnomaly", "realAdExchange", "realTraffic")


def nab_dir() -> Path:
    return bench_data("KAIZEN_NAB_DIR", "nab", "labels/combined_windows.json")


def load_scorer(base: Path) -> ModuleType:
    """Import the shared scorer as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("nab_score", base / "nab_score.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(base / "nab_score.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nab_score"] = mod  # dataclasses need the module registered
    try:
        spec.loader.exec_module(mod)
    except ModuleNotFoundError as exc:  # the scorer's own imports (pandas), which kaizen does not need
        del sys.modules["nab_score"]
        raise ModuleNotFoundError(
            f"the NAB scorer {base / 'nab_score.py'} needs {exc.name}, which is not installed: "
            "install the bench extra (.venv/bin/pip install -e '.[bench]'; make bench does)", name=exc.name) from exc
    return mod


@dataclass
class NabFile:
    relpath: str
    timestamps: list[str]
    epochs: np.ndarray
    values: np.ndarray


def load_files(base: Path, corpora: Sequence[str] | None = None) -> tuple[list[NabFile], dict[str, Any]]:
    windows = json.loads((base / "labels" / "combined_windows.json").read_text())
    out = []
    for rel in sorted(windows):
        if corpora and rel.split("/")[0] not in corpora:
            continue
        with open(base / "data" / rel, newline="") as fh:
            rows = list(csv.DictReader(fh))
        ts = [r["timestamp"] for r in rows]
        ep = np.array([np.datetime64(t.replace(" ", "T"), "s").astype("int64") for t in ts], dtype=float)
        out.append(NabFile(rel, ts, ep, np.array([float(r["value"]) for r in rows])))
    return out, windows


class NabBench:
    """The files, their scorer rows (prepared once) and per-corpus evaluation with the shared scorer's
    own functions (threshold sweep, fixed-threshold score, normaliser)."""

    def __init__(self, base: Path, quick: bool = False) -> None:
        self.files, windows = load_files(base, QUICK_CORPORA if quick else None)
        self.mod = load_scorer(base)
        self.profiles = self.mod.DEFAULT_PROFILES
        self.rows = []
        wid = 0
        for f in self.files:
            ts = np.array(f.timestamps, dtype="datetime64[ns]")
            self.rows.append(self.mod.prepare_file(f.relpath, ts, np.zeros(len(ts)), windows[f.relpath], wid))
            wid += len(windows[f.relpath])
        self.corpora = sorted({f.relpath.split("/")[0] for f in self.files})
        self.index = {c: [i for i, f in enumerate(self.files) if f.relpath.startswith(c + "/")] for c in self.corpora}
        self.points = int(sum(len(f.values) for f in self.files))

    def score_all(self, fn: Callable[[NabFile], list[float]]) -> list[list[float]]:
        return [fn(f) for f in self.files]

    def _rows(self, scores: list[list[float]], corpora: Sequence[str]) -> list[Any]:
        sel = []
        for c in corpora:
            for i in self.index[c]:
                fr = self.rows[i]
                keep = fr.n_rows - len(fr.scores)
                fr.scores = np.asarray(scores[i][keep:], dtype=float)
                sel.append(fr)
        return sel

    def optimise(self, scores: list[list[float]], corpora: Sequence[str], profile: str) -> tuple[float, float]:
        """(normalised score, threshold) with the threshold optimised on these corpora."""
        o = self.mod.optimise(self._rows(scores, corpora), self.profiles[profile])
        return self.normalise(o["raw"], corpora, profile), float(o["threshold"])

    def raw_at(self, scores: list[list[float]], corpora: Sequence[str], profile: str, threshold: float | None) -> float:
        thr = self.mod.NO_DETECTION_THRESHOLD if threshold is None else threshold
        return float(self.mod.score_at(self._rows(scores, corpora), self.profiles[profile], thr)[0])

    def normalise(self, raw: float, corpora: Sequence[str], profile: str) -> float:
        rows = [self.rows[i] for c in corpora for i in self.index[c]]
        null, perfect = self.mod.normaliser(rows, self.profiles[profile])
        return float(100.0 * (raw - null) / (perfect - null)) if perfect != null else float(raw)
