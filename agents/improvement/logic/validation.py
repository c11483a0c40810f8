"""Validation of generated code: syntax, imports, type hints, security, complexity, tenant isolation.

Rules (each failed check carries its reasons):
- syntax: `ast.parse` of every file.
- imports: absolute imports resolve with importlib.util.find_spec or to one of the given files;
  relative imports resolve against the given files' package paths.
- type_hints: annotations are checked to be *resolvable* (every name used in an annotation, also
  inside string annotations, is bound in the module or a builtin). mypy is not run: a cold mypy run
  costs seconds per validation, and generated code imports modules mypy would have to analyse too.
- security: bandit (as a library) on a temp copy — any finding but B101 (assert) fails — plus an
  AST deny-list that always fails: eval, exec, compile, __import__, os.system/popen/exec*/spawn*,
  subprocess, pickle, marshal, shelve, ctypes.
- complexity: radon cyclomatic complexity < 10 for every function and method.
- tenant_isolation: (1) SQL literals (SELECT/UPDATE/DELETE/INSERT) must mention tenant_id;
  (2) SQL must not be built with f-strings, `%` or `+` concatenation (it also must be parameterised);
  (3) a literal `tenant_id` value (keyword argument, assignment, dict entry, comparison) other than
  the tenant being served is another tenant's data; with no tenant (system-wide) no literal is allowed;
  (4) path-like literals `/kaizen/<t>/`, `tenants/<t>/`, `tenant=<t>` must name the served tenant.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bandit.core import config as bandit_config
from bandit.core import manager as bandit_manager
from radon.complexity import cc_visit

MAX_COMPLEXITY = 10
BANDIT_IGNORED = frozenset({"B101"})
DENIED_CALLS = frozenset({"eval", "exec", "compile", "__import__"})
DENIED_MODULES = frozenset({"subprocess", "pickle", "marshal", "shelve", "ctypes", "cPickle", "dill"})
DENIED_OS = re.compile(r"^(system|popen|exec\w*|spawn\w*|fork\w*|posix_spawn\w*)$")
SQL = re.compile(r"^\s*(select\s.+\sfrom\s|update\s.+\sset\s|delete\s+from\s|insert\s+into\s)", re.I | re.S)
TENANT_PATH = re.compile(r"(?:/kaizen/|tenants?/|tenant[_-]?id=|tenant=)([A-Za-z0-9_.-]+)")


@dataclass
class ValidationResult:
    ok: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def errors(self) -> list[str]:
        return [f"{name}: {e}" for name, c in self.checks.items() for e in c["errors"]]


def _check(errors: list[str]) -> dict[str, Any]:
    return {"ok": not errors, "errors": errors}


def _module_name(path: str) -> str:
    p = PurePosixPath(path)
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _provided_modules(files: dict[str, str]) -> set[str]:
    mods: set[str] = set()
    for path in files:
        name = _module_name(path)
        parts = name.split(".")
        mods.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return mods


def _resolvable(name: str, provided: set[str]) -> bool:
    if name in provided:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_imports(path: str, tree: ast.Module, provided: set[str]) -> list[str]:
    errors: list[str] = []
    package = _module_name(path).split(".")[:-1] if not path.endswith("__init__.py") else _module_name(path).split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            errors += [f"{path}:{node.lineno}: cannot resolve import {a.name}"
                       for a in node.names if not _resolvable(a.name, provided)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
                if base and not _resolvable(base, provided):
                    errors.append(f"{path}:{node.lineno}: cannot resolve import {base}")
                continue
            up = node.level - 1
            if up > len(package):
                errors.append(f"{path}:{node.lineno}: relative import beyond the top package")
                continue
            parent = package[: len(package) - up]
            target = ".".join(parent + ([node.module] if node.module else []))
            candidates = [target] if node.module else [f"{target}.{a.name}".lstrip(".") for a in node.names]
            if node.module is None and target in provided:
                continue  # `from . import x` where x is a name of the package itself
            for cand in candidates:
                if cand not in provided:
                    errors.append(f"{path}:{node.lineno}: relative import {cand or '.'} not among the given files")
    return errors


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


def _annotation_names(ann: ast.expr, path: str, errors: list[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ann):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                inner = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                errors.append(f"{path}:{ann.lineno}: string annotation {node.value!r} is not valid Python")
                continue
            found |= _annotation_names(inner, path, errors)
    return found


def check_type_hints(path: str, tree: ast.Module) -> list[str]:
    errors: list[str] = []
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
        for name in sorted(_annotation_names(ann, path, errors) - bound):
            errors.append(f"{path}:{ann.lineno}: annotation name {name!r} is not defined or imported")
    return errors


def _denied(path: str, tree: ast.Module) -> list[str]:
    errors: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            errors += [f"{path}:{node.lineno}: imports {m} (denied)" for m in mods if m.split(".")[0] in DENIED_MODULES]
            if isinstance(node, ast.ImportFrom) and node.module == "os":
                errors += [f"{path}:{node.lineno}: imports os.{a.name} (denied)"
                           for a in node.names if DENIED_OS.match(a.name)]
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in DENIED_CALLS:
                errors.append(f"{path}:{node.lineno}: calls {f.id}() (denied)")
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "os" \
                    and DENIED_OS.match(f.attr):
                errors.append(f"{path}:{node.lineno}: calls os.{f.attr}() (denied)")
    return errors


def check_security(files: dict[str, str], trees: dict[str, ast.Module]) -> list[str]:
    errors: list[str] = []
    for path, tree in trees.items():
        errors += _denied(path, tree)
    with tempfile.TemporaryDirectory(prefix="kaizen-validate-") as tmp:
        for i, (path, code) in enumerate(sorted(files.items())):
            if path in trees:
                (Path(tmp) / f"f{i}.py").write_text(code, encoding="utf-8")
        names = {f"f{i}.py": path for i, path in enumerate(sorted(files))}
        mgr = bandit_manager.BanditManager(bandit_config.BanditConfig(), "file")
        mgr.discover_files([tmp], recursive=True)
        mgr.run_tests()
        for issue in mgr.get_issue_list():
            if issue.test_id in BANDIT_IGNORED:
                continue
            src = names.get(Path(issue.fname).name, issue.fname)
            errors.append(f"{src}:{issue.lineno}: bandit {issue.test_id} ({issue.severity}): {issue.text}")
    return errors


def check_complexity(path: str, code: str) -> list[str]:
    return [f"{path}:{b.lineno}: {b.name} has cyclomatic complexity {b.complexity} (must be < {MAX_COMPLEXITY})"
            for b in cc_visit(code) if type(b).__name__ == "Function" and b.complexity >= MAX_COMPLEXITY]


def _sql_literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
        return node.value
    return None


def _built_sql(node: ast.AST) -> bool:
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        return bool(SQL.match(text + " x"))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return any(_sql_literal(side) is not None for side in (node.left, node.right))
    return False


def _tenant_literals(node: ast.AST) -> list[tuple[int, str]]:
    """(line, value) of literal values given to tenant_id in calls, assignments, dicts and comparisons."""
    out: list[tuple[int, str]] = []

    def lit(n: ast.AST | None) -> str | None:
        return n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None

    def is_tenant(n: ast.AST) -> bool:
        return (isinstance(n, ast.Name) and n.id == "tenant_id") or (
            isinstance(n, ast.Attribute) and n.attr == "tenant_id") or lit(n) == "tenant_id"

    if isinstance(node, ast.Call):
        out += [(node.lineno, v) for k in node.keywords if k.arg == "tenant_id" and (v := lit(k.value)) is not None]
    elif isinstance(node, ast.Assign) and any(is_tenant(t) for t in node.targets) and (v := lit(node.value)):
        out.append((node.lineno, v))
    elif isinstance(node, ast.Dict):
        out += [(node.lineno, v) for k, val in zip(node.keys, node.values, strict=True)
                if k is not None and lit(k) == "tenant_id" and (v := lit(val)) is not None]
    elif isinstance(node, ast.Compare) and len(node.comparators) == 1:
        left, right = node.left, node.comparators[0]
        if is_tenant(left) and (v := lit(right)) is not None:
            out.append((node.lineno, v))
        elif is_tenant(right) and (v := lit(left)) is not None:
            out.append((node.lineno, v))
    return out


def check_tenant_isolation(path: str, tree: ast.Module, tenant_id: str | None) -> list[str]:
    errors: list[str] = []
    for node in ast.walk(tree):
        sql = _sql_literal(node)
        if sql is not None and "tenant_id" not in sql.lower():
            errors.append(f"{path}:{getattr(node, 'lineno', 0)}: SQL without a tenant_id filter: {sql.strip()[:60]!r}")
        if _built_sql(node):
            errors.append(f"{path}:{getattr(node, 'lineno', 0)}: SQL built by string formatting; use parameters")
        for line, value in _tenant_literals(node):
            if value != tenant_id:
                errors.append(f"{path}:{line}: hard-coded tenant_id {value!r}"
                              + (f" (serving {tenant_id!r})" if tenant_id else " in a system-wide change"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in TENANT_PATH.finditer(node.value):
                if m.group(1) != tenant_id and not m.group(1).startswith("{"):
                    errors.append(f"{path}:{node.lineno}: literal refers to tenant {m.group(1)!r}")
    return errors


def validate(files: dict[str, str], tenant_id: str | None = None) -> ValidationResult:
    """Run every check over the files; ok only when all pass.  Non-Python paths are skipped."""
    py = {p: c for p, c in files.items() if p.endswith(".py")}
    names = ("syntax", "imports", "type_hints", "security", "complexity", "tenant_isolation")
    errs: dict[str, list[str]] = {n: [] for n in names}
    if not py:
        errs["syntax"].append("no Python files to validate")
    trees: dict[str, ast.Module] = {}
    for path, code in py.items():
        try:
            trees[path] = ast.parse(code, filename=path)
        except SyntaxError as exc:
            errs["syntax"].append(f"{path}:{exc.lineno}: {exc.msg}")
    provided = _provided_modules(py)
    for path, tree in trees.items():
        errs["imports"] += check_imports(path, tree, provided)
        errs["type_hints"] += check_type_hints(path, tree)
        errs["complexity"] += check_complexity(path, py[path])
        errs["tenant_isolation"] += check_tenant_isolation(path, tree, tenant_id)
    if trees:
        errs["security"] += check_security(py, trees)
    checks = {n: _check(e) for n, e in errs.items()}
    return ValidationResult(all(c["ok"] for c in checks.values()), checks)
