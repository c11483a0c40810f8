"""The Python allow-list: imports, builtins, module attributes and dynamic access a generated file may use.

Every import must be allowed by the Policy (or be a module of the change set itself); every builtin used
must be on the allowed list; attributes of restricted modules must be listed; module objects of
restricted modules may not be passed around (that would bypass the attribute check); getattr, setattr,
delattr and hasattr need a literal attribute name, and never on a module with setattr/delattr;
introspection attributes that reach frames, globals or every class (`__globals__`, `__subclasses__`,
`f_globals`, ...) are refused, also as strings.  See docs/validation.md for the tables.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import re
import sys
import types

from agents.improvement.logic.validation.findings import Finding
from agents.improvement.logic.validation.policy import (
    CAPABILITY_BUILTINS,
    CAPABILITY_MODULES,
    OBJECT_ATTRS,
    RESTRICTED_ATTRS,
    SAFE_MODULES,
    Policy,
)

ALWAYS_DENIED_NAMES = frozenset({"__builtins__", "__builtin__", "__import__", "__loader__", "__spec__"})
ALLOWED_DUNDERS = frozenset({
    "__init__", "__new__", "__post_init__", "__enter__", "__exit__", "__aenter__", "__aexit__", "__iter__",
    "__next__", "__aiter__", "__anext__", "__await__", "__len__", "__contains__", "__getitem__", "__setitem__",
    "__delitem__", "__missing__", "__reversed__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__",
    "__hash__", "__repr__", "__str__", "__format__", "__bytes__", "__bool__", "__int__", "__float__",
    "__index__", "__call__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__floordiv__", "__mod__", "__neg__", "__pos__", "__abs__", "__and__", "__or__", "__xor__", "__invert__",
    "__name__", "__qualname__", "__doc__", "__module__", "__all__", "__version__", "__slots__",
    "__dataclass_fields__", "__members__", "__wrapped__", "__set_name__", "__get__",
    "__set__", "__delete__", "__init_subclass__", "__class_getitem__", "__main__", "__future__",
})
FRAME_ATTRS = frozenset({"f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame", "tb_next",
                         "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code",
                         "func_globals", "func_code"})
ESCAPE_STRING = re.compile(
    r"__(builtins|builtin|import|globals|subclasses|code|closure|bases?|mro|class|dict|getattribute|"
    r"reduce(_ex)?|loader|spec|self|func)__|\b(f_(globals|locals|builtins|back)|(gi|cr|ag|tb)_frame)\b")
DYNAMIC_ATTR = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_ANNOTATION_NODES = (ast.Expression, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Tuple, ast.List,
                     ast.BinOp, ast.BitOr, ast.Load, ast.Slice)
_BUILTIN_NAMES = frozenset(dir(builtins))
_EXCEPTIONS = frozenset(n for n in _BUILTIN_NAMES
                        if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException))
_KNOWN_MODULES = SAFE_MODULES | frozenset(RESTRICTED_ATTRS) | frozenset().union(*CAPABILITY_MODULES.values())


@functools.lru_cache(maxsize=4096)
def submodule(module: str, attr: str) -> str | None:
    """The module `module.attr` is, when it is one: a known module name, or — for standard-library modules and
    the listed libraries only, never a component's own code — what the imported module shows (typing.sys)."""
    full = f"{module}.{attr}"
    if full in _KNOWN_MODULES:
        return full
    top = module.split(".")[0]
    if top not in sys.stdlib_module_names and top not in SAFE_MODULES and top not in RESTRICTED_ATTRS:
        return None  # a component's own or an unknown package is never imported by validation
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    value = getattr(mod, attr, None)
    return value.__name__ if isinstance(value, types.ModuleType) else None


def _rule_for_builtin(name: str) -> str:
    if name in ("eval", "exec", "compile"):
        return "py.eval"
    if name == "__import__":
        return "py.dynamic-import"
    if name in CAPABILITY_BUILTINS:
        return "py.capability"
    return "py.builtin"


class _Checker:
    def __init__(self, path: str, tree: ast.Module, policy: Policy, provided: set[str]) -> None:
        self.path, self.tree, self.policy, self.provided = path, tree, policy, provided
        self.findings: list[Finding] = []
        self.modules: dict[str, str] = {}  # bound name → module it refers to
        self.parents: dict[ast.AST, ast.AST] = {}
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                self.parents[child] = parent

    def add(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(Finding("security", self.path, getattr(node, "lineno", 0), rule, message))

    # ----------------------------------------------------------------- imports
    def _module(self, node: ast.AST, name: str) -> None:
        if name in self.provided or name.split(".")[0] in self.provided:
            return
        ok, why = self.policy.module_allowed(name)
        if not ok:
            rule = "py.dynamic-import" if name.split(".")[0] == "importlib" else (
                "py.capability" if "capability" in why else "py.import")
            self.add(node, rule, f"import of {name}: {why}")

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for a in node.names:
                self._module(node, a.name)
                self.modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            return
        if node.level:
            return  # relative: a module of the change set (the imports check says whether it is there)
        mod = node.module or ""
        self._module(node, mod)
        for a in node.names:
            if a.name == "*":
                if self.policy.restricted(mod):
                    self.add(node, "py.import", f"`from {mod} import *` would bypass the attribute allow-list")
                continue
            full = f"{mod}.{a.name}"
            if full in _KNOWN_MODULES:
                self._module(node, full)
                self.modules[a.asname or a.name] = full
                continue
            self._attribute(node, mod, a.name)

    # ----------------------------------------------------------------- attributes and names
    def _attr_name(self, node: ast.AST, attr: str) -> None:
        if attr.startswith("__") and attr.endswith("__") and attr not in ALLOWED_DUNDERS:
            self.add(node, "py.dunder", f"introspection attribute {attr!r} is not allowed")
        elif attr in FRAME_ATTRS:
            self.add(node, "py.dunder", f"frame/code attribute {attr!r} is not allowed")
        elif attr in OBJECT_ATTRS and OBJECT_ATTRS[attr] not in self.policy.capabilities:
            self.add(node, "py.capability", f".{attr} reaches an event loop, a process or the network: "
                                            f"needs the {OBJECT_ATTRS[attr]!r} capability")

    def _attribute(self, node: ast.AST, module: str, attr: str) -> None:
        self._attr_name(node, attr)
        sub = submodule(module, attr)
        if sub is not None:  # e.g. typing.sys, collections._sys: another module reached through an allowed one
            if sub not in self.provided:
                ok, why = self.policy.module_allowed(sub)
                if not ok:
                    self.add(node, "py.capability" if "capability" in why else "py.attribute",
                             f"{module}.{attr} is the module {sub}: {why}")
            return
        if attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__")):
            self.add(node, "py.attribute", f"private attribute {module}.{attr} of a module is not allowed")
            return
        ok, why = self.policy.attribute_allowed(module, attr)
        if not ok:
            self.add(node, "py.capability" if "capability" in why else "py.attribute", why)

    def _module_of(self, expr: ast.expr) -> str | None:
        """The module an expression names: an imported name, or a submodule reached through one."""
        if isinstance(expr, ast.Name):
            return self.modules.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = self._module_of(expr.value)
            return submodule(base, expr.attr) if base else None
        return None

    def attribute(self, node: ast.Attribute) -> None:
        self._attr_name(node, node.attr)
        module = self._module_of(node.value)
        if module is not None:
            if isinstance(node.ctx, ast.Store | ast.Del):
                self.add(node, "py.setattr", f"assigning to {module}.{node.attr} changes a module for everyone")
            self._attribute(node, module, node.attr)

    def name(self, node: ast.Name) -> None:
        if node.id in ALWAYS_DENIED_NAMES:
            self.add(node, "py.builtins" if "builtin" in node.id else "py.dynamic-import",
                     f"{node.id} gives access to every builtin or to the import system")
            return
        if node.id in _BUILTIN_NAMES and node.id not in _EXCEPTIONS and not self.policy.builtin_allowed(node.id)[0]:
            # also when the file binds the name itself: one binding anywhere must not unlock the builtin
            # everywhere else (`def g(): eval = 1` beside a real `eval(...)`); such names are refused outright
            self.add(node, _rule_for_builtin(node.id), self.policy.builtin_allowed(node.id)[1]
                     + ("" if isinstance(node.ctx, ast.Load) else "; do not rebind it either"))
            return
        if not isinstance(node.ctx, ast.Load):
            return
        if node.id in DYNAMIC_ATTR and not self._called(node):
            self.add(node, "py.getattr", f"{node.id} passed as a value would take computed attribute names")
            return
        if node.id in self.modules:
            parent = self.parents.get(node)
            used_as_base = isinstance(parent, ast.Attribute) and parent.value is node
            if not used_as_base and self.policy.restricted(self.modules[node.id]) and not self._dyn_target(node):
                self.add(node, "py.module-value", f"module {self.modules[node.id]} used as a value; "
                                                  "only `module.attribute` is checked, so this is refused")
            return

    def _called(self, node: ast.Name) -> bool:
        parent = self.parents.get(node)
        return isinstance(parent, ast.Call) and parent.func is node

    def _dyn_target(self, node: ast.Name) -> bool:
        """The module is the first argument of getattr/hasattr (that call is checked on its own)."""
        parent = self.parents.get(node)
        return (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name)
                and parent.func.id in DYNAMIC_ATTR and bool(parent.args) and parent.args[0] is node)

    # ----------------------------------------------------------------- getattr & co
    def call(self, node: ast.Call) -> None:
        f = node.func
        if not (isinstance(f, ast.Name) and f.id in DYNAMIC_ATTR):
            return
        if len(node.args) < 2 or not (isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            self.add(node, "py.getattr", f"{f.id}() with a computed attribute name; use a literal name")
            return
        attr = node.args[1].value
        target = node.args[0]
        self._attr_name(node, attr)
        if isinstance(target, ast.Name) and target.id in self.modules:
            if f.id in ("setattr", "delattr"):
                self.add(node, "py.setattr", f"{f.id}() on module {self.modules[target.id]}")
            self._attribute(node, self.modules[target.id], attr)
        elif isinstance(target, ast.Name) and target.id in _BUILTIN_NAMES and f.id in ("setattr", "delattr"):
            self.add(node, "py.setattr", f"{f.id}() on builtin {target.id}")

    def strings(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and ESCAPE_STRING.search(node.value):
            parent = self.parents.get(node)
            if isinstance(parent, ast.Expr):
                return  # a docstring is never evaluated as a name
            self.add(node, "py.dunder", f"string {node.value[:40]!r} names an introspection attribute")

    def annotation(self, ann: ast.expr | None) -> None:
        """String annotations are evaluated by typing.get_type_hints and pydantic: names and subscripts only."""
        if ann is None:
            return
        for node in ast.walk(ann):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            try:
                inner = ast.parse(node.value, mode="eval")
            except SyntaxError:
                continue  # reported by the type_hints check
            for sub in ast.walk(inner):
                if not isinstance(sub, _ANNOTATION_NODES):
                    self.add(ann, "py.annotation", f"string annotation {node.value[:40]!r} holds a "
                                                   f"{type(sub).__name__}; annotations are evaluated as code")
                    break
                if isinstance(sub, ast.Name | ast.Attribute):
                    name = sub.id if isinstance(sub, ast.Name) else sub.attr
                    if name in ALWAYS_DENIED_NAMES or (name.startswith("__") and name not in ALLOWED_DUNDERS):
                        self.add(ann, "py.annotation", f"string annotation {node.value[:40]!r} names {name}")
                        break

    def annotations(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                    if arg is not None:
                        self.annotation(arg.annotation)
                self.annotation(node.returns)
            elif isinstance(node, ast.AnnAssign):
                self.annotation(node.annotation)

    def run(self) -> list[Finding]:
        self.annotations()
        nodes = list(ast.walk(self.tree))
        for node in nodes:  # imports first: names below are judged by what the file imported
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.imports(node)
        for node in nodes:
            if isinstance(node, ast.Attribute):
                self.attribute(node)
            elif isinstance(node, ast.Name):
                self.name(node)
            elif isinstance(node, ast.Call):
                self.call(node)
            elif isinstance(node, ast.Constant):
                self.strings(node)
            elif isinstance(node, ast.MatchClass):
                for attr in node.kwd_attrs:  # `case C(__class__=x)` reads that attribute
                    self._attr_name(node, attr)
        return self.findings


def check_allowlist(path: str, tree: ast.Module, policy: Policy, provided: set[str]) -> list[Finding]:
    """Every use of a module, builtin or attribute outside the allow-lists, with its line."""
    return _Checker(path, tree, policy, provided).run()
