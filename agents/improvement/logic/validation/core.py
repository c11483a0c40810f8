"""Validate one change set — paths, sizes, per-type content, the Python allow-list and quality gates.

This is the one function the improvement cycle and `kaizen validate` both call (see docs/validation.md).
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from agents.improvement.logic.validation.files import check_content, check_sizes, decode
from agents.improvement.logic.validation.findings import Finding, ValidationResult
from agents.improvement.logic.validation.policy import Policy
from agents.improvement.logic.validation.pyrules import check_allowlist
from agents.improvement.logic.validation.quality import (
    check_bandit,
    check_complexity,
    check_imports,
    check_type_hints,
    provided_modules,
)
from agents.improvement.logic.validation.tenancy import check_tenant_isolation
from agents.improvement.logic.validation.toplevel import check_toplevel
from connectors.actuators.paths import path_problems


def _python(path: str, code: str, tenant_id: str | None, policy: Policy,
            provided: set[str]) -> tuple[ast.Module | None, list[Finding]]:
    try:
        tree = ast.parse(code, filename=path)
    except SyntaxError as exc:
        return None, [Finding("syntax", path, exc.lineno or 0, "syntax.python", exc.msg)]
    out = check_allowlist(path, tree, policy, provided)
    out += check_toplevel(path, tree)
    out += check_imports(path, tree, provided)
    out += check_type_hints(path, tree)
    out += check_complexity(path, code)
    out += check_tenant_isolation(path, tree, tenant_id)
    return tree, out


def validate(files: Mapping[str, str | bytes], tenant_id: str | None = None, policy: Policy | None = None,
             root: Path | None = None) -> ValidationResult:
    """Every finding of the change set `files` ({relative path: content}); ok only when there is none.

    `tenant_id` is the tenant served (None: a system-wide change); `policy` the component's confinement
    policy (defaults when None); `root` the directory the paths are relative to, when there is one on
    disk (the git working tree, or the directory given to `kaizen validate`): symlinks and escapes are
    then checked against it.
    """
    policy = policy or Policy()
    findings: list[Finding] = []
    if not files:
        findings.append(Finding("paths", "(change set)", 0, "changeset.empty", "the change set has no files"))
    texts: dict[str, str] = {}
    for path, content in files.items():
        findings += [Finding("paths", path, 0, p.rule, p.message)
                     for p in path_problems(path, policy.source_roots, policy.suffixes, root)]
        text, problems = decode(path, content)
        findings += problems
        if text is not None:
            texts[path] = text
    findings += check_sizes(texts, policy)
    allowed_suffixes = {s.lower() for s in policy.suffixes}
    py = {p: t for p, t in texts.items() if PurePosixPath(p).suffix.lower() == ".py" and ".py" in allowed_suffixes}
    provided = provided_modules(sorted(py))
    parsed: dict[str, str] = {}
    for path, text in sorted(texts.items()):
        if PurePosixPath(path).suffix.lower() not in allowed_suffixes:
            continue  # refused by its path already; its content is never interpreted
        findings += check_content(path, text)
        if path in py:
            tree, problems = _python(path, text, tenant_id, policy, provided)
            findings += problems
            if tree is not None:
                parsed[path] = text
    if parsed:
        findings += check_bandit(parsed)
    return ValidationResult.of(findings, list(files))


def change_diff(files: Mapping[str, str], current: Mapping[str, str | None]) -> str:
    """The unified diff an approver reads: each file from its current content (or nothing) to the new one."""
    chunks: list[str] = []
    for path in sorted(files):
        old = current.get(path)
        chunks.extend(difflib.unified_diff(
            (old or "").splitlines(keepends=True), files[path].splitlines(keepends=True),
            fromfile=f"a/{path}" if old is not None else "/dev/null", tofile=f"b/{path}"))
    return "".join(c if c.endswith("\n") else c + "\n" for c in chunks)
