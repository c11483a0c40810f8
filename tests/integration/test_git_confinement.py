"""The git actuator refuses unsafe paths by itself (defence in depth behind validation), on a real git repo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from connectors.actuators.git import GitActuator
from connectors.actuators.paths import UnsafePath


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "generated").mkdir()
    (root / "generated" / "a.py").write_text("X = 1\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(root), *env, "add", "."], check=True)
    subprocess.run(["git", "-C", str(root), *env, "commit", "-qm", "init"], check=True)
    return root


def _commits(repo: Path) -> int:
    out = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "HEAD"], capture_output=True, text=True,
                         check=True).stdout
    return int(out)


@pytest.mark.parametrize(("key", "reason"), [
    (".git/config", "path.vcs"), (".git/hooks/post-commit", "path.vcs"), ("../x.py", "path.parent"),
    ("/abs.py", "path.absolute"), (".github/workflows/ci.yml", "path.hidden"), ("generated/.gitattributes", "path.hidden"),
    ("pyproject.toml", "path.config"),
])
async def test_unsafe_keys_are_refused_and_nothing_is_written(repo: Path, key: str, reason: str) -> None:
    act = GitActuator(repo)
    config_before = (repo / ".git" / "config").read_text()
    with pytest.raises(UnsafePath, match=reason.replace(".", r"\.")):
        await act.apply(key, "[core]\n\tfsmonitor = touch pwned\n", "imp-evil")
    with pytest.raises(UnsafePath):
        await act.read(key)
    assert (repo / ".git" / "config").read_text() == config_before
    assert _commits(repo) == 1 and not (repo.parent / "x.py").exists()


async def test_symlinks_out_of_the_repo_are_refused(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo / "generated" / "link")
    os.symlink(outside / "f.py", repo / "generated" / "f.py")
    act = GitActuator(repo)
    for key in ("generated/link/x.py", "generated/f.py"):
        with pytest.raises(UnsafePath, match="symlink"):
            await act.apply(key, "X = 2\n", "imp-evil")
    assert list(outside.iterdir()) == [] and _commits(repo) == 1


async def test_safe_key_still_applies_and_rolls_back(repo: Path) -> None:
    act = GitActuator(repo)
    change = await act.apply("generated/a.py", "X = 2\n", "imp-ok")
    assert (repo / "generated" / "a.py").read_text() == "X = 2\n" and _commits(repo) == 2
    await act.rollback(change)
    assert (repo / "generated" / "a.py").read_text() == "X = 1\n"
