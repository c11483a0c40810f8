"""NAB quality benchmark: replay every NAB file through `score_series` and score it with the shared scorer."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, DetectorParams, score_series
from benchmarks.data import bench_data

# Numenta HTM on these same 41 files (standard profile; figure given with the shared bench).
HTM_REFERENCE = {"standard": 68.94}
# Numenta HTM on the full 58-file NAB v1.0 scoreboard (README; different file set, for orientation only).
HTM_PUBLISHED_58_FILES = {"standard": 70.5, "reward_low_FP_rate": 62.6, "reward_low_FN_rate": 75.2}
OTHER_REFERENCES = {"ARTime": 76.73, "KNN-CAD": 57.05, "windowed Gaussian": 42.58}
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
    spec.loader.exec_module(mod)
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
        ep = np.array(
            [np.datetime64(t.replace(" ", "T"), "s").astype("int64") for t in ts], dtype=float
        )
        out.append(NabFile(rel, ts, ep, np.array([float(r["value"]) for r in rows])))
    return out, windows


def score_file(f: NabFile, params: DetectorParams | None = None) -> list[float]:
    return score_series(zip(f.epochs.tolist(), f.values.tolist(), strict=True), params)


class InProcessScorer:
    """Prepares the scorer's per-file rows once so parameter sweeps only re-score."""

    def __init__(self, base: Path, files: list[NabFile], windows: dict[str, Any]) -> None:
        self.mod = load_scorer(base)
        self.rows = []
        wid = 0
        for f in files:
            ts = np.array(f.timestamps, dtype="datetime64[ns]")
            fr = self.mod.prepare_file(f.relpath, ts, np.zeros(len(ts)), windows[f.relpath], wid)
            wid += len(windows[f.relpath])
            self.rows.append(fr)

    def evaluate(self, scores: list[list[float]], subset: Sequence[int] | None = None) -> dict[str, Any]:
        idx = range(len(self.rows)) if subset is None else subset
        sel = []
        for i in idx:
            fr = self.rows[i]
            keep = fr.n_rows - len(fr.scores)
            fr.scores = np.asarray(scores[i][keep:], dtype=float)
            sel.append(fr)
        return dict(self.mod.evaluate(sel, self.mod.DEFAULT_PROFILES))


def _official(base: Path, results: Path, corpus: str) -> dict[str, Any]:
    out_json = results / "scores.json"
    cmd = [sys.executable, str(base / "nab_score.py"), "--data", str(base / "data"),
           "--labels", str(base / "labels" / "combined_windows.json"),
           "--results", str(results), "--corpus", corpus, "--json", str(out_json)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)  # noqa: S603 - fixed argv
    return dict(json.loads(out_json.read_text()))


def run(quick: bool = False) -> dict[str, Any]:
    base = nab_dir()
    corpora = QUICK_CORPORA if quick else None
    t0 = time.perf_counter()
    files, _ = load_files(base, corpora)
    n_points = 0
    with tempfile.TemporaryDirectory(prefix="kaizen-nab-") as tmp:
        root = Path(tmp)
        t1 = time.perf_counter()
        for f in files:
            sc = score_file(f)
            n_points += len(sc)
            dest = root / f.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["timestamp", "value", "anomaly_score"])
                w.writerows(zip(f.timestamps, f.values.tolist(), sc, strict=True))
        detect_s = time.perf_counter() - t1
        official = _official(base, root, ",".join(corpora) if corpora else "all")
    scores = _extract(official)
    return {
        "benchmark": "nab_quality",
        "quick": quick,
        "corpora": list(corpora) if corpora else "all",
        "files": len(files),
        "points": n_points,
        "scores": scores,
        "reference_htm_same_41_files": HTM_REFERENCE if not quick else "not comparable (subset of corpora)",
        "reference_htm_published_58_files": HTM_PUBLISHED_58_FILES,
        "other_references_standard": OTHER_REFERENCES if not quick else None,
        "live_anomaly_threshold": ANOMALY_THRESHOLD,
        "detector_seconds": round(detect_s, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }


def _extract(official: dict[str, Any]) -> dict[str, Any]:
    """Pick score and threshold per profile from the scorer's JSON, whatever its nesting."""
    out: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("standard", "reward_low_FP_rate", "reward_low_FN_rate") and isinstance(v, dict) \
                        and "score" in v:
                    out[k] = {"score": round(float(v["score"]), 2), "threshold": v.get("threshold")}
                else:
                    walk(v)

    walk(official)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only " + ", ".join(QUICK_CORPORA))
    args = ap.parse_args()
    print(json.dumps(run(quick=args.quick)))


if __name__ == "__main__":
    main()
