"""What a generated change set may contain: source roots, suffixes, sizes, allowed modules and capabilities.

Allow-lists, not deny-lists: a module is importable only when listed here (or by the component's policy),
a builtin is callable only when listed here, and a few listed modules are restricted to listed
attributes.  File, process, network and pickle access are *capabilities* that only a component's
policy can grant; some modules are never importable (they would open every other door).  The full
tables are documented in docs/validation.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CAPABILITIES = ("file", "process", "network", "pickle")
DEFAULT_SOURCE_ROOTS = ("generated", "tests")
DEFAULT_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".toml", ".md", ".txt")
DEFAULT_MAX_FILE_BYTES = 100_000
DEFAULT_MAX_CHANGE_BYTES = 400_000
DEFAULT_MAX_FILES = 50

# Modules any generated code may import: pure computation, data structures, typing, time.
SAFE_MODULES = frozenset({
    "__future__", "abc", "array", "base64", "binascii", "bisect", "calendar", "cmath", "collections",
    "collections.abc", "contextlib", "contextvars", "copy", "dataclasses", "datetime", "decimal", "difflib",
    "enum", "fractions", "functools", "graphlib", "hashlib", "heapq", "hmac", "ipaddress", "itertools",
    "json", "math", "numbers", "operator", "random", "re", "secrets", "statistics", "string", "struct",
    "textwrap", "time", "typing", "typing_extensions", "unicodedata", "uuid", "zoneinfo", "zlib",
    "asyncio", "logging", "structlog", "pydantic", "orjson", "pytest",
})
# Of these modules only the listed attributes may be used (the rest reach processes, sockets or files).
RESTRICTED_ATTRS: dict[str, frozenset[str]] = {
    "asyncio": frozenset({
        "sleep", "wait_for", "wait", "gather", "shield", "timeout", "timeout_at", "TimeoutError", "CancelledError",
        "Event", "Lock", "Semaphore", "BoundedSemaphore", "Condition", "Queue", "PriorityQueue", "LifoQueue",
        "QueueEmpty", "QueueFull", "create_task", "current_task", "all_tasks", "Task", "Future", "TaskGroup",
        "iscoroutine", "iscoroutinefunction", "as_completed", "run", "to_thread", "ensure_future", "Barrier",
        "InvalidStateError", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
    }),
    "logging": frozenset({
        "getLogger", "Logger", "LoggerAdapter", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET",
        "debug", "info", "warning", "error", "exception", "critical", "log", "Filter", "Formatter", "LogRecord",
        "NullHandler",
    }),
    "contextlib": frozenset({
        "contextmanager", "asynccontextmanager", "suppress", "nullcontext", "ExitStack", "AsyncExitStack",
        "closing", "aclosing", "AbstractContextManager", "AbstractAsyncContextManager",
    }),
    "operator": frozenset({  # attrgetter/methodcaller take attribute names as strings: not allowed
        "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt",
        "ge", "and_", "or_", "xor", "not_", "truth", "itemgetter", "contains", "index", "concat", "countOf",
    }),
    "pydantic": frozenset({  # not ImportString (imports by name), create_model/TypeAdapter (evaluate strings)
        "BaseModel", "RootModel", "Field", "ConfigDict", "PrivateAttr", "AliasChoices", "AliasPath",
        "field_validator", "model_validator", "field_serializer", "model_serializer", "computed_field",
        "validator", "root_validator", "ValidationError", "PositiveInt", "PositiveFloat", "NonNegativeInt",
        "NonNegativeFloat", "NegativeInt", "NegativeFloat", "StrictStr", "StrictInt", "StrictFloat", "StrictBool",
        "StrictBytes", "SecretStr", "SecretBytes", "AnyUrl", "HttpUrl", "conint", "confloat", "constr", "conlist",
        "Json", "UUID4", "AwareDatetime", "NaiveDatetime", "ValidationInfo",
    }),
    "pytest": frozenset({"fixture", "mark", "raises", "approx", "param", "skip", "fail", "warns", "xfail",
                         "FixtureRequest", "MonkeyPatch", "LogCaptureFixture", "CaptureFixture"}),
}
# Attributes of otherwise allowed modules that evaluate strings as code (forward references).
EVAL_ATTRS: dict[str, frozenset[str]] = {
    "typing": frozenset({"get_type_hints", "ForwardRef", "evaluate_forward_ref"}),
    "typing_extensions": frozenset({"get_type_hints", "ForwardRef", "evaluate_forward_ref", "get_annotations"}),
}
# Capability → modules it makes importable (whole module unless RESTRICTED_ATTRS says otherwise).
CAPABILITY_MODULES: dict[str, frozenset[str]] = {
    "file": frozenset({"os", "os.path", "pathlib", "io", "shutil", "tempfile", "glob", "fnmatch", "fileinput",
                       "sqlite3", "csv", "gzip", "bz2", "lzma", "zipfile", "tarfile", "mmap"}),
    "process": frozenset({"subprocess", "multiprocessing", "pty", "signal", "concurrent.futures", "threading",
                          "sched"}),
    "network": frozenset({"socket", "ssl", "select", "selectors", "http", "http.client", "http.server", "urllib",
                          "urllib.request", "urllib.parse", "smtplib", "ftplib", "imaplib", "poplib", "telnetlib",
                          "socketserver", "xmlrpc", "xmlrpc.client", "httpx", "requests", "aiohttp", "urllib3",
                          "boto3", "botocore", "aiokafka", "websockets", "grpc"}),
    "pickle": frozenset({"pickle", "marshal", "shelve", "copyreg", "dill", "cloudpickle", "joblib"}),
}
# Attributes of capability modules that need a *further* capability (os with "file" is still no shell).
GUARDED_ATTRS: dict[str, dict[str, str]] = {
    "os": {name: "process" for name in (
        "system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
        "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "fork", "forkpty",
        "posix_spawn", "posix_spawnp", "kill", "killpg", "startfile", "plock", "abort")},
}
# Method names that reach processes or the network whatever object they are called on (an event loop got
# through `task.get_loop()`, a socket-like object handed in): refused unless the capability is granted.
OBJECT_ATTRS: dict[str, str] = {
    **{n: "process" for n in ("subprocess_exec", "subprocess_shell", "add_signal_handler", "get_loop",
                              "get_event_loop", "get_running_loop", "_get_loop", "_loop")},
    **{n: "network" for n in (
        "create_connection", "create_server", "create_datagram_endpoint", "create_unix_connection",
        "create_unix_server", "connect_accepted_socket", "sock_connect", "sock_accept", "sock_sendall",
        "sock_recv", "sock_recv_into", "sock_sendfile", "sock_sendto", "sock_recvfrom", "getaddrinfo",
        "getnameinfo", "start_tls", "connect_read_pipe", "connect_write_pipe", "add_reader", "add_writer",
        "sendfile")},
}
# Never importable, whatever the policy says: they reach every other module or the interpreter itself.
NEVER_MODULES = frozenset({
    "importlib", "builtins", "__builtin__", "ctypes", "cffi", "posix", "nt", "sys", "gc", "inspect", "code",
    "codeop", "runpy", "pydoc", "imp", "zipimport", "pkgutil", "site", "types", "faulthandler", "pdb", "bdb",
    "trace", "tracemalloc", "atexit", "dis", "ast", "compileall", "py_compile", "webbrowser", "antigravity",
})
CAPABILITY_BUILTINS: dict[str, str] = {"open": "file", "input": "process", "breakpoint": "process"}
ALLOWED_BUILTINS = frozenset({
    "abs", "aiter", "all", "anext", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format", "frozenset", "getattr",
    "hasattr", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter", "len", "list", "map", "max",
    "min", "next", "object", "oct", "ord", "pow", "print", "property", "range", "repr", "reversed", "round",
    "set", "setattr", "slice", "sorted", "staticmethod", "str", "sum", "super", "tuple", "type", "zip",
    "delattr", "NotImplemented", "Ellipsis", "None", "True", "False", "__name__", "__doc__",
})


@dataclass(frozen=True)
class Policy:
    """The confinement policy of one component (defaults, then the component's KAIZEN_VALIDATION_POLICIES)."""

    source_roots: tuple[str, ...] = DEFAULT_SOURCE_ROOTS
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_change_bytes: int = DEFAULT_MAX_CHANGE_BYTES
    max_files: int = DEFAULT_MAX_FILES
    extra_modules: frozenset[str] = field(default_factory=frozenset)  # `pkg` exactly, `pkg.*` with submodules
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def module_allowed(self, name: str) -> tuple[bool, str]:
        """(allowed, why not) for an absolute import of `name`."""
        top = name.split(".")[0]
        if name in NEVER_MODULES or top in NEVER_MODULES or any(p.startswith("_") for p in name.split(".")[1:]) \
                or (top.startswith("_") and top != "__future__"):
            return False, f"module {name!r} is never allowed (it reaches the interpreter or every other module)"
        for cap, mods in CAPABILITY_MODULES.items():
            if name in mods or top in mods:
                if cap in self.capabilities:
                    return True, ""
                return False, f"module {name!r} needs the {cap!r} capability, which this component's policy lacks"
        if name in SAFE_MODULES or self._extra(name):
            return True, ""
        return False, f"module {name!r} is not on the allowed list (add it to the component's policy if needed)"

    def _extra(self, name: str) -> bool:
        for entry in self.extra_modules:
            if entry.endswith(".*"):
                base = entry[:-2]
                if name == base or name.startswith(base + "."):
                    return True
            elif name == entry:
                return True
        return False

    def attribute_allowed(self, module: str, attr: str) -> tuple[bool, str]:
        """(allowed, why not) for `module.attr` where module was imported by name."""
        if attr in EVAL_ATTRS.get(module, frozenset()):
            return False, f"{module}.{attr} evaluates strings as code"
        only = RESTRICTED_ATTRS.get(module)
        if only is not None and attr not in only:
            return False, f"{module}.{attr} is not on the allowed list of {module!r}"
        need = GUARDED_ATTRS.get(module, {}).get(attr)
        if need is not None and need not in self.capabilities:
            return False, f"{module}.{attr} needs the {need!r} capability"
        return True, ""

    def restricted(self, module: str) -> bool:
        """True when passing the module object around would bypass the attribute checks."""
        return module in RESTRICTED_ATTRS or module in GUARDED_ATTRS

    def builtin_allowed(self, name: str) -> tuple[bool, str]:
        if name in ALLOWED_BUILTINS:
            return True, ""
        cap = CAPABILITY_BUILTINS.get(name)
        if cap is not None:
            if cap in self.capabilities:
                return True, ""
            return False, f"builtin {name}() needs the {cap!r} capability"
        return False, f"builtin {name!r} is not on the allowed list"


def _tuple(v: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if v is None:
        return default
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return tuple(str(x) for x in v)


def make_policy(base: Mapping[str, Any], override: Mapping[str, Any] | None = None) -> Policy:
    """A Policy from plain settings values, then a component's overrides (unknown keys are an error)."""
    known = {"source_roots", "suffixes", "max_file_bytes", "max_change_bytes", "max_files", "allowed_imports",
             "capabilities"}
    merged = dict(base)
    for k, v in (override or {}).items():
        if k not in known:
            raise ValueError(f"unknown validation policy key {k!r}; known: {sorted(known)}")
        merged[k] = v
    caps = frozenset(_tuple(merged.get("capabilities"), ()))
    unknown = caps - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}; known: {list(CAPABILITIES)}")
    return Policy(
        source_roots=_tuple(merged.get("source_roots"), DEFAULT_SOURCE_ROOTS),
        suffixes=_tuple(merged.get("suffixes"), DEFAULT_SUFFIXES),
        max_file_bytes=int(merged.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES),
        max_change_bytes=int(merged.get("max_change_bytes") or DEFAULT_MAX_CHANGE_BYTES),
        max_files=int(merged.get("max_files") or DEFAULT_MAX_FILES),
        extra_modules=frozenset(_tuple(merged.get("allowed_imports"), ())),
        capabilities=caps,
    )


def policy_from_settings(settings: Any, component: str | None = None) -> Policy:
    """The policy the cycle and `kaizen validate` apply: KAIZEN_SOURCE_ROOTS, KAIZEN_ALLOWED_SUFFIXES,
    KAIZEN_MAX_FILE_BYTES, KAIZEN_MAX_CHANGE_BYTES, KAIZEN_MAX_CHANGE_FILES, then the component's entry
    of KAIZEN_VALIDATION_POLICIES (keys as in make_policy; "*" applies to every component)."""
    base = {"source_roots": settings.kaizen_source_roots, "suffixes": settings.kaizen_allowed_suffixes,
            "max_file_bytes": settings.kaizen_max_file_bytes, "max_change_bytes": settings.kaizen_max_change_bytes,
            "max_files": settings.kaizen_max_change_files}
    policies: Mapping[str, Mapping[str, Any]] = settings.kaizen_validation_policies
    merged: dict[str, Any] = dict(policies.get("*", {}))
    if component:
        merged.update(policies.get(component, {}))
    return make_policy(base, merged)
