"""Quality gates on generated Python: imports resolve, annotations resolve, bandit is clean, complexity < 10.

- imports: absolute imports resolve with importlib.util.find_spec or to a file of the change set;
  relative imports resolve against the change set's package paths.
- type_hints: every name used in an annotation (also inside string annotations) is bound in the module
  or a builtin.  mypy is not run: a cold run costs seconds per validation.
- security (extra gate behind the allow-list): bandit as a library on a temp copy — any finding but
  B101 (assert) fails.
- complexity: radon cyclomatic complexity < 10 for every function and method.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import tempfile
from pathlib import Path, PurePosixPath

from bandit.core import config as bandit_config
from bandit.core import manager as bandit_manager
from radon.complexity import cc_visit

from agents.improvement.logic.validation.findings import Finding

MAX_COMPLEXITY = 10
BANDIT_IGNORED = frozenset({"B101"})


def module_name(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def provided_modules(paths: list[str]) -> set[str]:
    """Every module (and parent package) the change set's Python files define."""
    mods: set[str] = set()
    for path in paths:
        parts = module_name(path).split(".")
        mods.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return mods


def _resolvable(name: str, provided: set[str]) -> bool:
    if name in provided:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_imports(path: str, tree: ast.Module, provided: set[str]) -> list[Finding]:
    out: list[Finding] = []

    def add(node: ast.stmt, rule: str, message: str) -> None:
        out.append(Finding("imports", path, node.lineno, rule, message))

    mod = module_name(path).split(".")
    package = mod if path.endswith("__init__.py") else mod[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if not _resolvable(a.name, provided):
                    add(node, "import.unresolved", f"cannot resolve import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and not _resolvable(node.module, provided):
                    add(node, "import.unresolved", f"cannot resolve import {node.module}")
                continue
            up = node.level - 1
            if up > len(package):
                add(node, "import.relative", "relative import beyond the top package")
                continue
            parent = package[: len(package) - up]
            target = ".".join(parent + ([node.module] if node.module else []))
            if node.module is None and target in provided:
                continue  # `from . import x` where x is a name of the package itself
            candidates = [target] if node.module else [f"{target}.{a.name}".lstrip(".") for a in node.names]
            for cand in candidates:
                if cand not in provided:
                    add(node, "import.relative", f"relative import {cand or '.'} not among the change set's files")
    return out


def _bound_names(tree: ast.Module) -> set[str]:
    names = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _annotation_names(ann: ast.expr, path: str, out: list[Finding]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ann):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                inner = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                out.append(Finding("type_hints", path, ann.lineno, "hint.syntax",
                                   f"string annotation {node.value!r} is not valid Python"))
                continue
            found |= _annotation_names(inner, path, out)
    return found


def check_type_hints(path: str, tree: ast.Module) -> list[Finding]:
    out: list[Finding] = []
    bound = _bound_names(tree)
    anns: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    anns.append(a.annotation)
            if node.returns is not None:
                anns.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
    for ann in anns:
        for name in sorted(_annotation_names(ann, path, out) - bound):
            out.append(Finding("type_hints", path, ann.lineno, "hint.undefined",
                               f"annotation name {name!r} is not defined or imported"))
    return out


def check_bandit(files: dict[str, str]) -> list[Finding]:
    """bandit over the Python files of the change set (written to a private temp directory)."""
    out: list[Finding] = []
    ordered = sorted(files)
    with tempfile.TemporaryDirectory(prefix="kaizen-validate-") as tmp:
        for i, path in enumerate(ordered):
            (Path(tmp) / f"f{i}.py").write_text(files[path], encoding="utf-8")
        names = {f"f{i}.py": path for i, path in enumerate(ordered)}
        mgr = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file")
        mgr.discover_files([tmp], recursive=True)
        mgr.run_tests()
        for issue in mgr.get_issue_list():
            if issue.test_id in BANDIT_IGNORED:
                continue
            src = names.get(Path(issue.fname).name, issue.fname)
            out.append(Finding("security", src, issue.lineno, f"bandit.{issue.test_id}",
                               f"bandit ({issue.severity}): {issue.text}"))
    return out


def check_complexity(path: str, code: str) -> list[Finding]:
    return [Finding("complexity", path, b.lineno, "complexity.cc",
                    f"{b.name} has cyclomatic complexity {b.complexity} (must be < {MAX_COMPLEXITY})")
            for b in cc_visit(code) if type(b).__name__ == "Function" and b.complexity >= MAX_COMPLEXITY]
