"""The git actuator's repository is created once even when several workers start together."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from connectors.actuators.git import ensure_repo


def test_workers_starting_together_share_one_repository_with_one_first_commit(tmp_path: Path) -> None:
    repo = tmp_path / "data" / "repo"
    # separate processes, as separate workers: a plain concurrent `git init` of one path fails on git's config lock
    with ProcessPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(ensure_repo, [repo] * 12))
    assert got == [repo.resolve()] * 12
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True)
    assert log.stdout.splitlines() == ["kaizen: initial"]


def test_an_existing_repository_is_left_as_it_is(tmp_path: Path) -> None:
    repo = ensure_repo(tmp_path / "repo")
    (repo / "app.cfg").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(repo), "add", "app.cfg"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "mine"],
                   check=True)
    assert ensure_repo(repo) == repo
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True, check=True)
    assert log.stdout.splitlines() == ["mine", "kaizen: initial"]
