"""No import-time side effects: what a module's top level (and a class body) may contain.

Importing a generated module must run nothing.  The top level may hold imports, function and class
definitions, docstrings, `pass`, assignments to plain names of *declarative* expressions, `if
TYPE_CHECKING:`, `try:` around imports, and `if __name__ == "__main__":` (whose body runs only as a
script).  A declarative expression is built from literals, names, attributes, subscripts, operators,
comprehensions and lambdas, and calls only to the constructors and helpers in DECLARATIVE (TypeVar,
field, re.compile, logging.getLogger, frozenset, ...).  Decorators, default argument values, class bases
and annotations are evaluated at import time too, so they follow the same rule.
"""

from __future__ import annotations

import ast

from agents.improvement.logic.validation.findings import Finding

DECLARATIVE = frozenset({
    # typing and data classes
    "TypeVar", "ParamSpec", "TypeVarTuple", "NewType", "NamedTuple", "namedtuple", "TypedDict", "cast",
    "field", "Field", "ConfigDict", "SettingsConfigDict", "auto", "Enum", "IntEnum", "StrEnum", "Flag",
    # constructors of plain values
    "frozenset", "set", "dict", "list", "tuple", "str", "int", "float", "bool", "bytes", "object", "range",
    "sorted", "len", "min", "max", "zip", "enumerate", "reversed", "Decimal", "Fraction", "timedelta",
    "timezone", "date", "datetime", "UUID", "ContextVar", "defaultdict", "OrderedDict", "deque", "Counter",
    "ChainMap", "Struct", "partial", "compile", "escape", "getLogger", "get_logger",
})
DECORATORS = frozenset({
    "dataclass", "property", "staticmethod", "classmethod", "abstractmethod", "cached_property", "lru_cache",
    "cache", "wraps", "total_ordering", "singledispatch", "singledispatchmethod", "overload", "final",
    "override", "runtime_checkable", "unique", "contextmanager", "asynccontextmanager", "fixture",
    "parametrize", "skip", "skipif", "xfail", "asyncio", "timeout", "field_validator", "model_validator",
    "validator", "root_validator", "computed_field", "setter", "getter", "deleter", "register",
})
CLASS_HOOKS = frozenset({"__init_subclass__", "__class_getitem__", "__set_name__", "__prepare__",
                         "__mro_entries__"})
_PLAIN = (ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Set, ast.Dict,
          ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Slice, ast.Starred, ast.JoinedStr,
          ast.FormattedValue, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _final_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


class _TopLevel:
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding("security", self.path, getattr(node, "lineno", 0), "py.toplevel", message))

    def expr(self, node: ast.AST | None, where: str) -> None:
        """A declarative expression: nothing in it runs code but the DECLARATIVE calls."""
        if node is None:
            return
        if isinstance(node, ast.Lambda):
            for d in [*node.args.defaults, *node.args.kw_defaults]:
                self.expr(d, where)
            return  # the body runs only when called
        if isinstance(node, ast.Call):
            name = _final_name(node.func)
            if name not in DECLARATIVE:
                self.add(node, f"call to {name or 'an expression'}() in {where} runs at import time")
                return
            for child in [*node.args, *(k.value for k in node.keywords)]:
                self.expr(child, where)
            return
        if isinstance(node, ast.expr) and not isinstance(node, _PLAIN):
            self.add(node, f"{type(node).__name__} in {where} runs at import time")
            return
        for sub in ast.iter_child_nodes(node):
            if isinstance(sub, ast.expr | ast.comprehension | ast.keyword):
                self.expr(sub, where)

    def decorator(self, node: ast.expr) -> None:
        target = node.func if isinstance(node, ast.Call) else node
        if _final_name(target) not in DECORATORS:
            self.add(node, f"decorator {_final_name(target) or '(expression)'} runs at import time; "
                           "only declarative decorators are allowed")
            return
        if isinstance(node, ast.Call):
            for child in [*node.args, *(k.value for k in node.keywords)]:
                self.expr(child, "a decorator argument")

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:
            self.decorator(d)
        args = node.args
        for default in [*args.defaults, *args.kw_defaults]:
            self.expr(default, f"a default of {node.name}()")
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None:
                self.expr(a.annotation, f"an annotation of {node.name}()")
        self.expr(node.returns, f"the return annotation of {node.name}()")

    def klass(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.decorator(d)
        for b in node.bases:
            self.expr(b, f"the bases of {node.name}")
        for k in node.keywords:
            if k.arg == "metaclass" and _final_name(k.value) not in ("ABCMeta", "EnumMeta", "EnumType"):
                self.add(k.value, f"metaclass of {node.name} runs code when the class is created")
            self.expr(k.value, f"the class keywords of {node.name}")
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name in CLASS_HOOKS:
                self.add(stmt, f"{node.name}.{stmt.name} runs when classes are created or subscripted (at import)")
        self.body(node.body, f"class {node.name}")

    def statement(self, node: ast.stmt, where: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.Pass):
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.function(node)
        elif isinstance(node, ast.ClassDef):
            self.klass(node)
        elif isinstance(node, ast.Expr):
            if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str | type(...))):
                self.add(node, f"expression statement at {where} runs at import time")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            self.assign(node, where)
        elif isinstance(node, ast.If):
            self.conditional(node, where)
        elif isinstance(node, ast.Try):
            for h in node.handlers:
                self.expr(h.type, f"an except clause at {where}")
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                self.body(block, where)
        else:
            self.add(node, f"{type(node).__name__} statement at {where} runs at import time")

    def assign(self, node: ast.Assign | ast.AugAssign | ast.AnnAssign, where: str) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            elts = t.elts if isinstance(t, ast.Tuple | ast.List) else [t]
            if not all(isinstance(e, ast.Name) for e in elts):
                self.add(node, f"assignment to {ast.unparse(t)[:40]} at {where} changes another object at import")
        if isinstance(node, ast.AnnAssign):
            self.expr(node.annotation, f"an annotation at {where}")
        self.expr(node.value, f"an assignment at {where}")

    def conditional(self, node: ast.If, where: str) -> None:
        test = node.test
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__" \
                and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant) \
                and test.comparators[0].value == "__main__":
            self.body(node.orelse, where)
            return  # the body runs only when the file is run as a script
        self.expr(test, f"an if condition at {where}")
        self.body(node.body, where)
        self.body(node.orelse, where)

    def body(self, stmts: list[ast.stmt], where: str) -> None:
        for s in stmts:
            self.statement(s, where)


def check_toplevel(path: str, tree: ast.Module) -> list[Finding]:
    """Import-time side effects at the module top level and in class bodies."""
    t = _TopLevel(path)
    t.body(tree.body, "module top level")
    return t.findings
