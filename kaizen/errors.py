"""The command line's error contract: every failure a user can cause becomes one line
`error: <what is wrong> — <what to do>` on stderr and exit code 2; the traceback goes to a log file.

Failures nobody could fix from the command line (bugs) also print one line, exit 1, and point at the log.
`kaizen --debug ...` (or KAIZEN_DEBUG=1) prints the traceback on stderr as well.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.errors import AccessDenied, ConfigError, ExternalError, InputError, KaizenError

USER_ERROR_EXIT = 2
BUG_EXIT = 1
DEBUG_ENV = "KAIZEN_DEBUG"


class UserError(KaizenError):
    """A failure the user can fix: what is wrong, and what to do about it."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(f"{what} — {todo}")
        self.what = what
        self.todo = todo


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def error_log_path() -> Path:
    """Where tracebacks go: <KAIZEN_DATA_DIR>/logs/errors.log (read raw: the settings may be what failed)."""
    return Path(os.environ.get("KAIZEN_DATA_DIR") or ".kaizen") / "logs" / "errors.log"


def _setting_hint(name: str) -> str:
    from streams.settings import Settings

    field = Settings.model_fields.get(name)
    if field is None:
        return ""
    default = field.get_default(call_default_factory=True)
    return f" (default {default})" if default not in (None, "", [], {}) else ""


def from_validation_error(exc: Any) -> UserError:
    """A pydantic ValidationError of the settings: name each variable, the value given and why it fails."""
    problems, names = [], []
    for err in exc.errors():
        loc = err.get("loc") or ("?",)
        name = str(loc[0])
        var = name.upper()
        names.append(var)
        given = err.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{var}{shown}: {msg}")
    todo = (f"set {names[0]} to a value that meets this, or unset it to use the default"
            f"{_setting_hint(names[0].lower())}"
            if len(names) == 1 else f"fix or unset {', '.join(dict.fromkeys(names))}")
    return UserError("invalid configuration: " + "; ".join(problems), todo)


def explain(exc: BaseException) -> UserError | None:
    """The user-facing form of an exception a user can cause, or None for a bug."""
    from pydantic import ValidationError

    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, ConfigError):
        return UserError(str(exc), "fix the setting or file it names and start again")
    if isinstance(exc, InputError):
        return UserError(str(exc), "fix the input it names and try again")
    if isinstance(exc, AccessDenied):
        return UserError(str(exc), "use a token whose principal has that role and tenant")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return UserError(f"address already in use ({exc.strerror})",
                         "stop what listens on that port or choose another port")
    if isinstance(exc, OSError) and exc.filename and exc.errno in (errno.ENOENT, errno.EACCES, errno.EROFS,
                                                                      errno.ENOTDIR, errno.EISDIR):
        return UserError(f"{exc.filename}: {exc.strerror}", "check the path exists and is writable by you")
    if isinstance(exc, FileNotFoundError):  # raised with a message of its own (e.g. benchmark data)
        return UserError(str(exc), "put the files there or point the variable it names elsewhere")
    if isinstance(exc, ExternalError):
        what, _, todo = str(exc).partition("; ")
        return UserError(what, todo or f"see the logs under {error_log_path().parent}")
    try:
        from aiokafka.errors import KafkaConnectionError
    except ImportError:  # pragma: no cover - a dependency
        return None
    if isinstance(exc, KafkaConnectionError):
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "?")
        return UserError(f"lost the Kafka broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS): {exc}",
                         "check the broker is running and KAFKA_BOOTSTRAP_SERVERS points at it")
    return None


def _log_traceback(exc: BaseException) -> Path | None:
    path = error_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.now(UTC).isoformat()} pid {os.getpid()}: {' '.join(sys.argv)}\n")
            fh.write("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return None  # an unwritable data dir must not hide the error itself


def report(exc: BaseException) -> int:
    """Print the one-line error for `exc`, log its traceback; return the exit code."""
    logged = _log_traceback(exc)
    where = f"traceback in {logged}" if logged else "no log file could be written"
    user = explain(exc)
    if debug_enabled():
        traceback.print_exception(exc, file=sys.stderr)
    if user is not None:
        sys.stderr.write(f"error: {user.what} — {user.todo}\n")
        return USER_ERROR_EXIT
    sys.stderr.write(f"error: unexpected {type(exc).__name__}: {str(exc)[:300]} — this is a bug in kaizen; "
                     f"{where} (run with --debug to print it)\n")
    return BUG_EXIT
