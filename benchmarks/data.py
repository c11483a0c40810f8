"""Where the shared benchmark data lives: ../shared/bench/<set> next to the repository, or an override."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def bench_data(env_var: str, name: str, marker: str) -> Path:
    """The folder of data set `name` ($env_var, else ../shared/bench/<name> beside the repository), checked
    for `marker` so a missing data set fails with what to set rather than deep inside a benchmark."""
    override = os.environ.get(env_var)
    path = Path(override or REPO_ROOT.parent / "shared" / "bench" / name).resolve()
    if not (path / marker).exists():
        source = f"{env_var}={override}" if override else f"the default ../shared/bench/{name} beside the repository"
        raise FileNotFoundError(f"{name} benchmark data not found in {path} ({source}; it should hold {marker}): "
                                f"set {env_var} to the {name} data folder")
    return path
