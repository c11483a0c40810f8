"""Actuator for files in a git working tree: write + commit to apply, `git revert` to roll back."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess  # nosec B404 - runs the local git binary with fixed argument lists, no shell
from pathlib import Path

from connectors.actuators.base import Actuator, AppliedChange, FingerprintMismatch, applied
from connectors.actuators.fingerprint import fingerprint, verify
from connectors.actuators.paths import UnsafePath, require_safe
from streams.errors import ActuatorError

TRAILER = "Kaizen-Improvement"


class GitError(ActuatorError):
    """A git command failed."""


def _has_commit(repo: Path) -> bool:
    if not (repo / ".git").exists():
        return False
    done = subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", "HEAD"],  # nosec B603 B607
                          capture_output=True, check=False)
    return done.returncode == 0


def ensure_repo(repo: Path) -> Path:
    """`repo` as a git repository with a first commit, created if need be. Workers sharing a data directory
    (`kaizen run --workers N`) start together: one creates it while the others wait on a lock file beside it
    (git's own config lock made a second concurrent `git init` fail)."""
    repo = repo.resolve()
    if _has_commit(repo):
        return repo  # the usual case: nothing to set up, no lock file
    repo.mkdir(parents=True, exist_ok=True)
    with open(repo.parent / f".{repo.name}.kaizen-init.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not (repo / ".git").exists():
            subprocess.run(["git", "init", "-q", str(repo)], check=True)  # nosec B603 B607 - fixed arguments
        if not _has_commit(repo):
            subprocess.run(["git", "-C", str(repo), "-c", "user.name=kaizen", "-c", "user.email=kaizen@localhost",
                            "commit", "-q", "--allow-empty", "-m", "kaizen: initial"], check=True)  # nosec B603 B607
    return repo


class GitActuator(Actuator):
    """Keys are paths relative to the repository root, checked by connectors/actuators/paths.py on every
    read and write (defence in depth behind validation): no absolute path, no `..`, nothing inside `.git`
    or any hidden/VCS directory, no tool configuration file, no symlink on the way.  Each apply is
    one commit carrying a `Kaizen-Improvement: <id>` trailer; the previous version is the parent
    commit's file.  All git calls run in a worker thread."""

    name = "git"

    def __init__(self, repo: Path, author_name: str = "kaizen", author_email: str = "kaizen@localhost") -> None:
        self.repo = Path(repo)
        self.env = {**os.environ, "GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
                    "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}

    def _path(self, key: str) -> Path:
        try:
            return require_safe(key, self.repo)
        except UnsafePath as exc:
            raise UnsafePath(f"git actuator: {exc}") from None

    def _run(self, *args: str) -> str:
        proc = subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True,  # nosec B603 B607
                              env=self.env, check=False)
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    async def _git(self, *args: str) -> str:
        return await asyncio.to_thread(self._run, *args)

    async def read(self, key: str) -> str | None:
        path = self._path(key)
        return await asyncio.to_thread(lambda: path.read_text(encoding="utf-8") if path.is_file() else None)

    async def _show(self, rev: str, key: str) -> str | None:
        try:
            return await self._git("show", f"{rev}:{key}")
        except GitError:
            return None

    async def apply(self, key: str, value: str, improvement_id: str, target: str | None = None) -> AppliedChange:
        name = self.full_key(key, target)
        path = self._path(name)
        current = await self.read(name)
        shas = (await self._git("log", "--format=%H", "--fixed-strings", f"--grep={TRAILER}: {improvement_id}",
                                "--", name)).split()
        if shas and current == value:
            return applied(name, await self._show(f"{shas[0]}^", name), value, improvement_id, target, shas[0], True)
        if current == value:
            return applied(name, current, value, improvement_id, target, None, noop=True)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._path(name)  # again right before writing: a symlink may have appeared since the check
            # O_NOFOLLOW: a symlink swapped in at the last component fails the open instead of being followed
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(value)

        await asyncio.to_thread(write)
        await self._git("add", "--", name)
        await self._git("commit", "-q", "-m", f"kaizen: apply {improvement_id} to {name}\n\n{TRAILER}: {improvement_id}",
                        "--", name)
        sha = (await self._git("rev-parse", "HEAD")).strip()
        return applied(name, current, value, improvement_id, target, sha)

    async def rollback(self, change: AppliedChange) -> None:
        current = await self.read(change.key)
        if change.version is None:
            return  # the apply wrote nothing
        if current == change.previous and current != change.new:
            return  # already rolled back
        if not verify(current, change.fingerprint):
            raise FingerprintMismatch(
                f"{change.key}: current {fingerprint(current)} != applied {change.fingerprint}; not reverting"
            )
        await self._git("revert", "--no-edit", change.version)
