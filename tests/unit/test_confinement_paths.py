"""The shared path rules (connectors/actuators/paths.py): structure, roots, suffixes, symlinks, escapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.actuators.paths import UnsafePath, path_problems, require_safe


def _rules(path: str, **kw: object) -> set[str]:
    return {p.rule for p in path_problems(path, **kw)}  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "rule"), [
    ("", "path.empty"), ("/abs.py", "path.absolute"), ("../x.py", "path.parent"), ("a/../../x.py", "path.parent"),
    (".git/config", "path.vcs"), ("a/.GIT/config", "path.vcs"), (".hg/hgrc", "path.vcs"), (".svn/x", "path.vcs"),
    ("git~1/config", "path.vcs"), (".github/workflows/x.yml", "path.hidden"), (".env", "path.hidden"),
    ("a/.vscode/tasks.json", "path.hidden"), ("a//b.py", "path.form"), ("a/./b.py", "path.form"),
    ("a\\b.py", "path.chars"), ("a/b:c.py", "path.chars"), ("a/\u0430.py", "path.chars"), ("-n.py", "path.chars"),
    ("setup.py", "path.config"), ("a/sitecustomize.py", "path.config"), ("pyproject.toml", "path.config"),
    ("x" * 300, "path.length"),
])
def test_structural_rules(path: str, rule: str) -> None:
    assert rule in _rules(path)


def test_plain_paths_pass_and_roots_and_suffixes_apply() -> None:
    assert _rules("svc/cache.py") == set()
    assert _rules("generated/a/b.py", roots=["generated"], suffixes=[".py"]) == set()
    assert _rules("generated", roots=["generated"]) == {"path.root"}  # the root itself is not a file under it
    assert _rules("svc/a.py", roots=["generated", "tests"]) == {"path.root"}
    assert _rules("svc/a.py", roots=["."]) == set()
    assert _rules("generated/a.sh", roots=["generated"], suffixes=[".py"]) == {"path.suffix"}


def test_symlinks_and_escapes_with_a_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "generated").mkdir(parents=True)
    os.symlink(outside, root / "generated" / "link")
    os.symlink(outside / "f.py", root / "generated" / "f.py")
    (root / "generated" / "dir.py").mkdir()
    assert "path.symlink" in _rules("generated/link/x.py", root=root)
    assert "path.symlink" in _rules("generated/f.py", root=root)
    assert "path.type" in _rules("generated/dir.py", root=root)
    assert _rules("generated/new/x.py", root=root) == set()
    with pytest.raises(UnsafePath, match="symlink"):
        require_safe("generated/link/x.py", root)
    assert require_safe("generated/ok.py", root) == root / "generated" / "ok.py"
