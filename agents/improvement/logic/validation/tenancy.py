"""Tenant isolation of generated code: SQL filtered by tenant_id and parameterised, no other tenant's literals.

Rules: (1) SQL literals (SELECT/UPDATE/DELETE/INSERT) must mention tenant_id; (2) SQL must not be built
with f-strings, `%` or `+` concatenation; (3) a literal `tenant_id` value (keyword argument, assignment,
dict entry, comparison) other than the tenant being served is another tenant's data, and with no tenant
(a system-wide change) no literal is allowed; (4) path-like literals `/kaizen/<t>/`, `tenants/<t>/`,
`tenant=<t>` must name the served tenant.
"""

from __future__ import annotations

import ast
import re

from agents.improvement.logic.validation.findings import Finding

SQL = re.compile(r"^\s*(select\s.+\sfrom\s|update\s.+\sset\s|delete\s+from\s|insert\s+into\s)", re.I | re.S)
TENANT_PATH = re.compile(r"(?:/kaizen/|tenants?/|tenant[_-]?id=|tenant=)([A-Za-z0-9_.-]+)")


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


def check_tenant_isolation(path: str, tree: ast.Module, tenant_id: str | None) -> list[Finding]:
    out: list[Finding] = []

    def add(line: int, rule: str, message: str) -> None:
        out.append(Finding("tenant_isolation", path, line, rule, message))

    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        sql = _sql_literal(node)
        if sql is not None and "tenant_id" not in sql.lower():
            add(line, "tenant.sql", f"SQL without a tenant_id filter: {sql.strip()[:60]!r}")
        if _built_sql(node):
            add(line, "tenant.sql-format", "SQL built by string formatting; use parameters")
        for lit_line, value in _tenant_literals(node):
            if value != tenant_id:
                add(lit_line, "tenant.literal", f"hard-coded tenant_id {value!r}"
                    + (f" (serving {tenant_id!r})" if tenant_id else " in a system-wide change"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for m in TENANT_PATH.finditer(node.value):
                if m.group(1) != tenant_id and not m.group(1).startswith("{"):
                    add(line, "tenant.path", f"literal refers to tenant {m.group(1)!r}")
    return out
