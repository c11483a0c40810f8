"""Validation of generated code: each check passes good code and fails bad code with reasons."""

from __future__ import annotations

import pytest

from agents.improvement.logic.validation import validate

GOOD = '''"""Cache wrapper."""
from __future__ import annotations

import functools
from typing import Callable

from .store import Store


def cached(size: int) -> Callable[..., object]:
    return functools.lru_cache(maxsize=size)


def fetch(store: Store, tenant_id: str, key: str) -> "Store | None":
    rows = store.query("SELECT v FROM items WHERE tenant_id = ? AND k = ?", (tenant_id, key))
    return rows
'''
STORE = '''class Store:
    def query(self, sql: str, args: tuple[str, ...]) -> "Store":
        return self
'''


def _files(code: str) -> dict[str, str]:
    return {"svc/cache.py": code, "svc/store.py": STORE, "svc/__init__.py": ""}


def test_good_code_passes_all_checks() -> None:
    r = validate(_files(GOOD), tenant_id="acme")
    assert r.ok, r.errors()
    assert set(r.checks) == {"syntax", "imports", "type_hints", "security", "complexity", "tenant_isolation"}


def test_syntax_error() -> None:
    r = validate({"a.py": "def f(:\n  pass\n"})
    assert not r.ok and not r.checks["syntax"]["ok"] and "a.py:1" in r.checks["syntax"]["errors"][0]


def test_unresolvable_imports() -> None:
    r = validate({"pkg/a.py": "import no_such_module_xyz\nfrom .missing import f\nimport json\n",
                  "pkg/__init__.py": ""})
    errs = r.checks["imports"]["errors"]
    assert not r.ok and len(errs) == 2
    assert any("no_such_module_xyz" in e for e in errs) and any("pkg.missing" in e for e in errs)


def test_unresolvable_annotations() -> None:
    r = validate({"a.py": "def f(x: Frobnicator) -> 'List[int]':\n    return []\n"})
    errs = r.checks["type_hints"]["errors"]
    assert any("Frobnicator" in e for e in errs) and any("'List'" in e for e in errs)


@pytest.mark.parametrize("snippet", [
    "x = eval('1 + 1')\n",
    "exec('print(1)')\n",
    "import subprocess\nsubprocess.run(['ls'])\n",
    "import os\nos.system('ls')\n",
    "import pickle\npickle.loads(b'')\n",
    "import hashlib\nh = hashlib.md5(b'x')\n",
])
def test_security_scan_fails_with_reasons(snippet: str) -> None:
    r = validate({"a.py": snippet})
    assert not r.checks["security"]["ok"], snippet
    assert r.checks["security"]["errors"][0].startswith("a.py:")


def test_complexity_limit() -> None:
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(10))
    r = validate({"a.py": f"def f(x: int) -> int:\n{branches}    return -1\n"})
    assert not r.checks["complexity"]["ok"] and "complexity 11" in r.checks["complexity"]["errors"][0]
    small = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(8))
    assert validate({"a.py": f"def f(x: int) -> int:\n{small}    return -1\n"}).checks["complexity"]["ok"]


@pytest.mark.parametrize(("code", "needle"), [
    ("Q = 'SELECT * FROM orders WHERE id = ?'\n", "without a tenant_id"),
    ("def q(t: str) -> str:\n    return f'SELECT * FROM orders WHERE tenant_id = {t}'\n", "string formatting"),
    ("def load(db: object) -> None:\n    db.get(tenant_id='globex')\n", "'globex'"),
    ("def ok(tenant_id: str) -> bool:\n    return tenant_id == 'globex'\n", "'globex'"),
    ("CFG = {'tenant_id': 'globex'}\n", "'globex'"),
    ("P = '/kaizen/globex/api/timeout_ms'\n", "'globex'"),
])
def test_tenant_isolation_rules(code: str, needle: str) -> None:
    r = validate({"a.py": code}, tenant_id="acme")
    assert not r.checks["tenant_isolation"]["ok"]
    assert any(needle in e for e in r.checks["tenant_isolation"]["errors"]), r.checks["tenant_isolation"]


def test_own_tenant_literal_is_fine_but_not_system_wide() -> None:
    code = "CFG = {'tenant_id': 'acme'}\nP = '/kaizen/acme/api/x'\n"
    assert validate({"a.py": code}, tenant_id="acme").checks["tenant_isolation"]["ok"]
    assert not validate({"a.py": code}, tenant_id=None).checks["tenant_isolation"]["ok"]


def test_no_python_files() -> None:
    assert not validate({"README.md": "x"}).ok
