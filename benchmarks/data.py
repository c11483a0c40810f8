"""Where the quality benchmarks' data sets (NAB, LogHub) live: an override per set, a root for all sets,
benchmarks/data/<set> in the repository (not committed: a copy or a symlink of the public data sets), or a
bench/<set> folder in a directory beside the repository (data checked out next to it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_VAR = "KAIZEN_BENCH_DATA"


def _beside_repository(name: str, marker: str) -> Path | None:
    """The first bench/<name> holding `marker` in a directory next to the repository's, in name order."""
    try:
        siblings = sorted(p for p in REPO_ROOT.parent.iterdir() if p.is_dir() and p != REPO_ROOT)
    except OSError:
        return None
    for sibling in siblings:
        candidate = sibling / "bench" / name
        if (candidate / marker).exists():
            return candidate
    return None


def bench_data(env_var: str, name: str, marker: str) -> Path:
    """The folder of data set `name`: $env_var, else $KAIZEN_BENCH_DATA/<name>, else benchmarks/data/<name>,
    else a bench/<name> beside the repository; checked for `marker` so a missing data set fails with what to
    set rather than deep inside a benchmark."""
    override = os.environ.get(env_var)
    root = os.environ.get(DATA_ROOT_VAR)
    if override:
        path, source = Path(override), f"{env_var}={override}"
    elif root:
        path, source = Path(root) / name, f"{DATA_ROOT_VAR}={root}"
    else:
        path, source = REPO_ROOT / "benchmarks" / "data" / name, "the default benchmarks/data/" + name
        if not (path / marker).exists():
            path = _beside_repository(name, marker) or path
    path = path.resolve()
    if not (path / marker).exists():
        raise FileNotFoundError(f"{name} benchmark data not found in {path} ({source}, nor in a bench/{name} "
                                f"folder beside the repository; it should hold {marker}): set {DATA_ROOT_VAR} "
                                f"to the folder holding nab/ and loghub/, or {env_var} to the {name} data folder")
    return path
