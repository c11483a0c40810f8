"""Path confinement rules for files kaizen writes: one pure check shared by validation and the git actuator.

A path is acceptable only when it is a relative POSIX path whose every component matches a small
character allow-list, has no `..`, no hidden (dot) component — which covers `.git`, `.github`, `.hg`,
`.svn`, `.gitattributes`, `.pre-commit-config.yaml`, `.vscode`, `.env` — no VCS directory in any
spelling git or a filesystem accepts (`git~1`), no file name that tools execute or read as configuration
(`pyproject.toml`, `setup.py`, `conftest.py`, `sitecustomize.py`, ...), and — when a root directory is
given — no symlink on the way and a resolved location inside that root.  Source roots and suffixes are
optional extra restrictions (validation sets them from the settings; the git actuator enforces the
structural rules alone, because it also stores plain configuration keys).  See docs/validation.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from streams.errors import InputError

# One path component: starts with a letter, digit or underscore (never `.` or `-`: hidden files and
# option-like names), then letters, digits, `_ . + -`.  Anything else (spaces, `:`, `\`, control
# characters, non-ASCII look-alikes) is refused.
COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")
VCS_NAMES = frozenset({"git", "hg", "svn", "cvs", "bzr", "_darcs", "fossil"})  # compared without dots
SHORT_NAME = re.compile(r"^[a-z0-9_]{1,6}~\d+$")  # 8.3 aliases such as GIT~1 for .git on NTFS
CONFIG_NAMES = frozenset({
    "pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "noxfile.py", "conftest.py", "pytest.ini",
    "sitecustomize.py", "usercustomize.py", "manage.py", "makefile", "dockerfile", "requirements.txt",
    "package.json", "buildspec.yml", "buildspec.yaml", "codecov.yml", "mkdocs.yml", "renovate.json",
})
MAX_PATH_CHARS = 255


@dataclass(frozen=True)
class PathProblem:
    """One reason a path is refused: a stable rule id and a sentence saying what is wrong."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


def _under(parts: tuple[str, ...], roots: Sequence[str]) -> bool:
    for root in roots:
        rparts = tuple(p for p in PurePosixPath(root).parts if p not in (".", ""))
        if not rparts or parts[: len(rparts)] == rparts and len(parts) > len(rparts):
            return True
    return False


def structural_problems(path: str) -> list[PathProblem]:
    """The rules that hold for every file kaizen writes, whatever the configuration."""
    if not path or not path.strip():
        return [PathProblem("path.empty", "empty path")]
    if len(path) > MAX_PATH_CHARS:
        return [PathProblem("path.length", f"path longer than {MAX_PATH_CHARS} characters")]
    if "\\" in path or "\x00" in path:
        return [PathProblem("path.chars", "backslash or NUL in the path")]
    p = PurePosixPath(path)
    if path.startswith("/") or p.is_absolute():
        return [PathProblem("path.absolute", "absolute path; only paths relative to the source root are allowed")]
    problems: list[PathProblem] = []
    raw = path.split("/")
    if ".." in raw:
        problems.append(PathProblem("path.parent", "`..` component; the path must stay under the source root"))
    if "" in raw[:-1] or raw[-1] == "" or "." in raw:
        problems.append(PathProblem("path.form", "empty or `.` component; write the path in its plain form"))
    for part in raw:
        if part in ("", ".", ".."):
            continue
        low = part.lower()
        if low.strip(".") in VCS_NAMES or SHORT_NAME.match(low):
            problems.append(PathProblem("path.vcs", f"version-control directory {part!r} in the path"))
        elif part.startswith("."):
            problems.append(PathProblem("path.hidden", f"hidden (dot) file or directory {part!r}"))
        elif not COMPONENT.match(part):
            problems.append(PathProblem("path.chars", f"component {part!r} has characters outside [A-Za-z0-9_.+-]"))
    if raw and raw[-1].lower() in CONFIG_NAMES:
        problems.append(PathProblem("path.config", f"{raw[-1]!r} is read or run by build/test tools"))
    return problems


def policy_problems(path: str, roots: Sequence[str], suffixes: Sequence[str]) -> list[PathProblem]:
    """Source-root and suffix allow-lists (validation of generated change sets)."""
    problems: list[PathProblem] = []
    parts = PurePosixPath(path).parts
    if roots and not _under(parts, roots):
        problems.append(PathProblem("path.root", f"outside the source roots {sorted(roots)}"))
    suffix = PurePosixPath(path).suffix.lower()
    if suffixes and suffix not in {s.lower() for s in suffixes}:
        problems.append(PathProblem("path.suffix", f"suffix {suffix or '(none)'!r} is not one of {sorted(suffixes)}"))
    return problems


def location_problems(root: Path, path: str) -> list[PathProblem]:
    """With the directory the path is relative to: no symlink on the way, and it resolves inside the root."""
    base = root.resolve()
    current = root
    for part in PurePosixPath(path).parts:
        current = current / part
        if current.is_symlink():
            return [PathProblem("path.symlink", f"{current.relative_to(root)} is a symlink; symlinks are refused")]
    target = (root / path).resolve()
    if target != base and base not in target.parents:
        return [PathProblem("path.escape", "resolves outside the source root")]
    if target.exists() and not target.is_file():
        return [PathProblem("path.type", "exists and is not a regular file")]
    return []


def path_problems(path: str, roots: Sequence[str] = (), suffixes: Sequence[str] = (),
                  root: Path | None = None) -> list[PathProblem]:
    """Every rule: structural always; roots/suffixes when given; symlinks/escape when `root` is given."""
    problems = structural_problems(path)
    if problems:
        return problems  # a malformed path is not looked up on disk
    problems = policy_problems(path, roots, suffixes)
    if root is not None:
        problems += location_problems(root, path)
    return problems


class UnsafePath(InputError):
    """A path refused by the confinement rules (the message lists every reason)."""


def require_safe(path: str, root: Path) -> Path:
    """The absolute location of `path` under `root`, or UnsafePath with every reason."""
    problems = path_problems(path, root=root)
    if problems:
        raise UnsafePath(f"refusing {path!r}: " + "; ".join(str(p) for p in problems))
    return root / path
