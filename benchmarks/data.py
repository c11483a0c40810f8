"""Where the quality benchmarks' data sets (NAB, LogHub) live: an override per set, a root for all sets, or
benchmarks/data/<set> in the repository (not committed: a copy or a symlink of the public data sets)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_VAR = "KAIZEN_BENCH_DATA"


def bench_data(env_var: str, name: str, marker: str) -> Path:
    """The folder of data set `name`: $env_var, else $KAIZEN_BENCH_DATA/<name>, else benchmarks/data/<name>;
    checked for `marker` so a missing data set fails with what to set rather than deep inside a benchmark."""
    override = os.environ.get(env_var)
    root = os.environ.get(DATA_ROOT_VAR)
    if override:
        path, source = Path(override), f"{env_var}={override}"
    elif root:
        path, source = Path(root) / name, f"{DATA_ROOT_VAR}={root}"
    else:
        path, source = REPO_ROOT / "benchmarks" / "data" / name, "the default benchmarks/data/" + name
    path = path.resolve()
    if not (path / marker).exists():
        raise FileNotFoundError(f"{name} benchmark data not found in {path} ({source}; it should hold {marker}): "
                                f"set {DATA_ROOT_VAR} to the folder holding nab/ and loghub/, or {env_var} "
                                f"to the {name} data folder")
    return path
