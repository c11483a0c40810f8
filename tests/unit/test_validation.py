"""Validation of generated change sets: quality gates, the Python allow-list, import-time effects, file types."""

from __future__ import annotations

import pytest

from agents.improvement.logic.validation import CHECKS, Policy, change_diff, make_policy, validate
from agents.improvement.logic.validation.findings import Finding

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
P = "generated/svc/a.py"


def _files(code: str) -> dict[str, str]:
    return {"generated/svc/cache.py": code, "generated/svc/store.py": STORE, "generated/svc/__init__.py": "",
            "generated/__init__.py": ""}


def _rules(files: dict[str, str], **kw: object) -> set[str]:
    return {f.rule for f in validate(files, **kw).findings}  # type: ignore[arg-type]


def test_good_code_passes_all_checks() -> None:
    r = validate(_files(GOOD), tenant_id="acme")
    assert r.ok, r.errors()
    assert set(r.checks) == set(CHECKS) and r.findings == []


def test_every_finding_has_path_line_rule_message() -> None:
    r = validate({P: "import subprocess\n\n\ndef f() -> None:\n    subprocess.run(['ls'])\n"})
    assert not r.ok
    for f in r.findings:
        assert isinstance(f, Finding) and f.path == P and f.line >= 1 and f.rule and f.message
    d = r.as_dict()
    assert d["findings"][0].keys() == {"check", "path", "line", "rule", "message"}
    assert r.summary().startswith(f"{len(r.findings)} finding(s) in security")


def test_syntax_error() -> None:
    r = validate({P: "def f(:\n  pass\n"})
    assert not r.checks["syntax"]["ok"] and r.findings[0].rule == "syntax.python" and r.findings[0].line == 1


def test_unresolvable_imports() -> None:
    pol = Policy(extra_modules=frozenset({"no_such_module_xyz"}))
    r = validate({"generated/pkg/a.py": "import no_such_module_xyz\nfrom .missing import f\nimport json\n",
                  "generated/pkg/__init__.py": ""}, policy=pol)
    errs = r.checks["imports"]["errors"]
    assert not r.ok and len(errs) == 2
    assert any("no_such_module_xyz" in e for e in errs) and any("generated.pkg.missing" in e for e in errs)


def test_unresolvable_annotations() -> None:
    r = validate({P: "def f(x: Frobnicator) -> 'List[int]':\n    return []\n"})
    errs = r.checks["type_hints"]["errors"]
    assert any("Frobnicator" in e for e in errs) and any("'List'" in e for e in errs)


# ------------------------------------------------------------------ the bypasses of issue 16, and more
BYPASSES = {
    "getattr_builtins": ("def f() -> object:\n    return getattr(__builtins__, 'ev' + 'al')('1')\n",
                         {"py.builtins", "py.getattr"}),
    "importlib_subprocess": ("import importlib\n\n\ndef f() -> object:\n"
                             "    return importlib.import_module('sub' + 'process')\n", {"py.dynamic-import"}),
    "open_passwd": ("def f() -> str:\n    with open('/etc/passwd') as fh:\n        return fh.read()\n",
                    {"py.capability"}),
    "pickle_via_importlib": ("import importlib\n\n\ndef f(b: bytes) -> object:\n"
                             "    return importlib.import_module('pickle').loads(b)\n", {"py.dynamic-import"}),
    "getattr_os_system": ("import os\n\n\ndef f() -> None:\n    getattr(os, 'sys' + 'tem')('id')\n",
                          {"py.capability", "py.getattr"}),
    "builtins_exec": ("import builtins\n\n\ndef f() -> None:\n    builtins.exec('1')\n", {"py.import"}),
    "pty_spawn": ("import pty\n\n\ndef f() -> None:\n    pty.spawn('/bin/sh')\n", {"py.capability"}),
    "posix_system": ("import posix\n\n\ndef f() -> None:\n    posix.system('id')\n", {"py.import"}),
    "socket_connect": ("import socket\n\n\ndef f() -> None:\n    socket.create_connection(('h', 80))\n",
                       {"py.capability"}),
    "import_time_effect": ("import logging\n\nlogging.getLogger('x').warning('imported')\n", {"py.toplevel"}),
    "import_time_call": ("X = print('side effect')\n", {"py.toplevel"}),
    "dunder_import": ("def f() -> object:\n    return __import__('os')\n", {"py.dynamic-import"}),
    "eval": ("def f(s: str) -> object:\n    return eval(s)\n", {"py.eval"}),
    "exec": ("def f(s: str) -> None:\n    exec(s)\n", {"py.eval"}),
    "compile": ("def f(s: str) -> object:\n    return compile(s, 'x', 'exec')\n", {"py.eval"}),
    "eval_alias": ("def f(s: str) -> object:\n    g = eval\n    return g(s)\n", {"py.eval"}),
    "subprocess": ("import subprocess\n\n\ndef f() -> None:\n    subprocess.run(['ls'])\n", {"py.capability"}),
    "os_system": ("import os\n\n\ndef f() -> None:\n    os.system('ls')\n", {"py.capability"}),
    "from_os_import_system": ("from os import system\n\n\ndef f() -> None:\n    system('id')\n", {"py.capability"}),
    "pickle": ("import pickle\n\n\ndef f(b: bytes) -> object:\n    return pickle.loads(b)\n", {"py.capability"}),
    "marshal": ("import marshal\n\n\ndef f(b: bytes) -> object:\n    return marshal.loads(b)\n", {"py.capability"}),
    "ctypes": ("import ctypes\n\n\ndef f() -> object:\n    return ctypes.CDLL(None)\n", {"py.import"}),
    "sys_modules": ("import sys\n\n\ndef f() -> object:\n    return sys.modules['os']\n", {"py.import"}),
    "subclasses": ("def f() -> object:\n    return ().__class__.__base__.__subclasses__()\n", {"py.dunder"}),
    "globals_via_func": ("def f() -> object:\n    return f.__globals__['__builtins__']\n", {"py.dunder"}),
    "globals_builtin": ("def f() -> object:\n    return globals()['x']\n", {"py.builtin"}),
    "vars_builtin": ("def f(o: object) -> object:\n    return vars(o)\n", {"py.builtin"}),
    "asyncio_subprocess": ("import asyncio\n\n\nasync def f() -> None:\n"
                           "    await asyncio.create_subprocess_shell('id')\n", {"py.attribute"}),
    "asyncio_network": ("import asyncio\n\n\nasync def f() -> None:\n"
                        "    await asyncio.open_connection('h', 80)\n", {"py.attribute"}),
    "module_as_value": ("import asyncio\n\n\ndef f() -> object:\n    m = asyncio\n    return m\n",
                        {"py.module-value"}),
    "setattr_module": ("import logging\n\n\ndef f() -> None:\n    setattr(logging, 'getLogger', None)\n",
                       {"py.setattr"}),
    "getattr_dunder_string": ("def f(o: object) -> object:\n    return getattr(o, '__globals__')\n", {"py.dunder"}),
    "format_string_escape": ("def f(o: object) -> str:\n    return '{0.__class__}'.format(o)\n", {"py.dunder"}),
    "operator_attrgetter": ("import operator\n\n\ndef f(o: object) -> object:\n"
                            "    return operator.attrgetter('x')(o)\n", {"py.attribute"}),
    "breakpoint": ("def f() -> None:\n    breakpoint()\n", {"py.capability"}),
    "decorator_runs": ("def deco(f: object) -> object:\n    return f\n\n\n@deco\ndef g() -> None:\n    pass\n",
                       {"py.toplevel"}),
    "default_arg_runs": ("def f(x: object = print('hi')) -> None:\n    pass\n", {"py.toplevel"}),
    "toplevel_loop": ("for i in range(3):\n    pass\n", {"py.toplevel"}),
    "class_body_call": ("class A:\n    x = print('hi')\n", {"py.toplevel"}),
    "metaclass": ("class M(type):\n    pass\n\n\nclass A(metaclass=M):\n    pass\n", {"py.toplevel"}),
    "module_subscript_store": ("import logging\n\nlogging.root = None\n", {"py.toplevel", "py.setattr"}),
    "sys_through_typing": ("import typing\n\n\ndef f() -> object:\n    return typing.sys.modules['os']\n",
                           {"py.attribute"}),
    "from_typing_import_sys": ("from typing import sys\n", {"py.attribute"}),
    "private_module_attr": ("import collections\n\n\ndef f() -> object:\n    return collections._sys\n",
                            {"py.attribute"}),
    "string_annotation_eval": ("from pydantic import BaseModel\n\n\nclass M(BaseModel):\n    x: \"eval('1')\"\n",
                               {"py.annotation"}),
    "pydantic_importstring": ("from pydantic import BaseModel, ImportString\n\n\nclass M(BaseModel):\n"
                              "    f: ImportString\n", {"py.attribute"}),
    "typing_get_type_hints": ("import typing\n\n\ndef f(x: object) -> object:\n"
                              "    return typing.get_type_hints(x)\n", {"py.attribute"}),
    "shadowed_eval": ("def g() -> None:\n    eval = 1\n\n\ndef f(s: str) -> object:\n    return eval(s)\n",
                      {"py.eval"}),
    "getattr_as_value": ("import functools\n\n\ndef f(o: object, n: list[str]) -> object:\n"
                         "    return functools.reduce(getattr, n, o)\n", {"py.getattr"}),
    "match_class_dunder": ("def f(o: object) -> object:\n    match o:\n        case str(__class__=c):\n"
                           "            return c\n    return None\n", {"py.dunder"}),
    "sys_through_structlog": ("import structlog\n\n\ndef f() -> object:\n    return structlog.stdlib.sys\n",
                              {"py.attribute"}),
    "event_loop_via_task": ("import asyncio\n\n\nasync def f() -> None:\n    t = asyncio.current_task()\n"
                            "    await t.get_loop().subprocess_shell(lambda: None, 'id')\n", {"py.capability"}),
    "init_subclass_hook": ("class A:\n    def __init_subclass__(cls) -> None:\n        print('x')\n\n\n"
                           "class B(A):\n    pass\n", {"py.toplevel"}),
    "os_through_random": ("import random\n\n\ndef f() -> None:\n    random._os.system('id')\n",
                          {"py.capability"}),
}


@pytest.mark.parametrize("case", sorted(BYPASSES))
def test_bypass_is_rejected_with_its_reason(case: str) -> None:
    code, expected = BYPASSES[case]
    r = validate({P: code})
    assert not r.ok, case
    rules = {f.rule for f in r.findings}
    assert expected <= rules, (case, r.errors())
    assert all(f.path == P and f.line >= 1 for f in r.findings if f.rule.startswith("py."))


def test_capabilities_are_granted_only_by_policy() -> None:
    net = "import socket\n\n\ndef f() -> object:\n    return socket.create_connection(('h', 80))\n"
    assert not validate({P: net}).ok
    assert validate({P: net}, policy=make_policy({}, {"capabilities": ["network"]})).checks["security"]["ok"]
    files = "from pathlib import Path\n\n\ndef f(p: str) -> str:\n    return Path(p).read_text()\n"
    assert validate({P: files}, policy=make_policy({}, {"capabilities": ["file"]})).ok
    shell = "import os\n\n\ndef f() -> None:\n    os.system('ls')\n"
    r = validate({P: shell}, policy=make_policy({}, {"capabilities": ["file"]}))
    assert "os.system needs the 'process' capability" in " ".join(r.errors())
    # never-allowed modules stay refused whatever the policy lists
    r = validate({P: "import importlib\n"}, policy=make_policy({}, {"allowed_imports": ["importlib"],
                                                                    "capabilities": list(("file", "process"))}))
    assert "py.dynamic-import" in {f.rule for f in r.findings}
    with pytest.raises(ValueError, match="unknown capabilities"):
        make_policy({}, {"capabilities": ["root"]})
    with pytest.raises(ValueError, match="unknown validation policy key"):
        make_policy({}, {"allow_everything": True})


def test_extra_modules_from_policy() -> None:
    code = "from svc.store import Store\n\n\ndef f(s: Store) -> Store:\n    return s\n"
    assert "py.import" in _rules({P: code})
    pol = make_policy({}, {"allowed_imports": ["svc.*"]})
    assert "py.import" not in {f.rule for f in validate({P: code}, policy=pol).findings}


def test_declarative_top_level_is_fine() -> None:
    code = '''"""Doc."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Iterator

T = TypeVar("T")
log = logging.getLogger(__name__)
PATTERN = re.compile(r"^a+$")
LIMITS = {"a": 1, "b": 2 * 3}
NAMES = frozenset(k for k in LIMITS)
__all__ = ["Box"]


@dataclass(frozen=True)
class Box:
    """A box."""

    items: list[int] = field(default_factory=list)
    label: str = "x"

    @property
    def size(self) -> int:
        return len(self.items)


def first(xs: Iterator[T]) -> T:
    return next(xs)


if __name__ == "__main__":
    print(Box())
'''
    r = validate({P: code})
    assert r.ok, r.errors()


# ------------------------------------------------------------------ paths, suffixes, types, sizes
@pytest.mark.parametrize(("path", "rule"), [
    (".git/config", "path.vcs"),
    ("generated/.git/hooks/pre-commit.py", "path.vcs"),
    (".github/workflows/ci.yml", "path.hidden"),
    ("generated/.gitattributes.txt", "path.hidden"),
    ("../x.py", "path.parent"),
    ("generated/../../x.py", "path.parent"),
    ("/abs.py", "path.absolute"),
    ("generated/GIT~1/config.txt", "path.vcs"),
    ("generated/a b.py", "path.chars"),
    ("generated/-rf.py", "path.chars"),
    ("generated\\x.py", "path.chars"),
    ("svc/x.py", "path.root"),
    ("generated/x.sh", "path.suffix"),
    ("generated/x.pth", "path.suffix"),
    ("generated/Makefile", "path.config"),
    ("generated/conftest.py", "path.config"),
    ("tests/pyproject.toml", "path.config"),
    ("generated//x.py", "path.form"),
])
def test_path_rules(path: str, rule: str) -> None:
    r = validate({path: "X = 1\n"})
    assert not r.ok and rule in {f.rule for f in r.findings if f.path == path}, r.errors()
    assert not r.checks["paths"]["ok"]


def test_data_files_are_parsed_by_type() -> None:
    ok = {"generated/a.json": '{"a": 1}', "generated/b.yaml": "a: 1\n", "generated/c.toml": "a = 1\n",
          "generated/d.md": "# title\n", "generated/e.txt": "plain\n"}
    assert validate(ok).ok, validate(ok).errors()
    bad = {"generated/a.json": "{a: 1", "generated/b.yml": "a: [1\n", "generated/c.toml": "a = \n",
           "generated/d.yaml": "!!python/object/apply:os.system ['id']\n", "generated/e.txt": "nul\x00byte\n"}
    rules = {(f.path, f.rule) for f in validate(bad).findings}
    assert {("generated/a.json", "syntax.json"), ("generated/b.yml", "syntax.yaml"),
            ("generated/c.toml", "syntax.toml"), ("generated/d.yaml", "syntax.yaml"),
            ("generated/e.txt", "text.control")} <= rules
    assert "text.encoding" in _rules({"generated/x.txt": b"\xff\xfe\x00"})  # type: ignore[dict-item]


def test_sizes_are_limited() -> None:
    pol = Policy(max_file_bytes=100, max_change_bytes=150, max_files=2)
    files = {"generated/a.txt": "x" * 101, "generated/b.txt": "y" * 60, "generated/c.txt": "z"}
    rules = {f.rule for f in validate(files, policy=pol).findings}
    assert {"size.file", "size.total", "size.count"} <= rules


def test_empty_change_set() -> None:
    r = validate({})
    assert not r.ok and r.findings[0].rule == "changeset.empty"


def test_complexity_limit() -> None:
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(10))
    r = validate({P: f"def f(x: int) -> int:\n{branches}    return -1\n"})
    assert not r.checks["complexity"]["ok"] and "complexity 11" in r.checks["complexity"]["errors"][0]
    small = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(8))
    assert validate({P: f"def f(x: int) -> int:\n{small}    return -1\n"}).checks["complexity"]["ok"]


def test_bandit_stays_an_extra_gate() -> None:
    r = validate({P: "import hashlib\n\n\ndef f() -> object:\n    return hashlib.md5(b'x')\n"})
    assert not r.ok and any(f.rule.startswith("bandit.B3") for f in r.findings), r.errors()


@pytest.mark.parametrize(("code", "needle"), [
    ("Q = 'SELECT * FROM orders WHERE id = ?'\n", "without a tenant_id"),
    ("def q(t: str) -> str:\n    return f'SELECT * FROM orders WHERE tenant_id = {t}'\n", "string formatting"),
    ("def load(db: dict[str, str]) -> None:\n    db.get(tenant_id='globex')\n", "'globex'"),
    ("def ok(tenant_id: str) -> bool:\n    return tenant_id == 'globex'\n", "'globex'"),
    ("CFG = {'tenant_id': 'globex'}\n", "'globex'"),
    ("P = '/kaizen/globex/api/timeout_ms'\n", "'globex'"),
])
def test_tenant_isolation_rules(code: str, needle: str) -> None:
    r = validate({P: code}, tenant_id="acme")
    assert not r.checks["tenant_isolation"]["ok"]
    assert any(needle in e for e in r.checks["tenant_isolation"]["errors"]), r.checks["tenant_isolation"]


def test_own_tenant_literal_is_fine_but_not_system_wide() -> None:
    code = "CFG = {'tenant_id': 'acme'}\nP = '/kaizen/acme/api/x'\n"
    assert validate({P: code}, tenant_id="acme").checks["tenant_isolation"]["ok"]
    assert not validate({P: code}, tenant_id=None).checks["tenant_isolation"]["ok"]


def test_diff_for_the_approver() -> None:
    d = change_diff({"generated/a.py": "X = 2\n", "generated/b.py": "Y = 1\n"},
                    {"generated/a.py": "X = 1\n", "generated/b.py": None})
    assert "--- a/generated/a.py" in d and "-X = 1" in d and "+X = 2" in d
    assert "--- /dev/null" in d and "+++ b/generated/b.py" in d and "+Y = 1" in d
