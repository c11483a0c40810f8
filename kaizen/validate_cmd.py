"""`kaizen validate --tenant T DIR`: validate the files under DIR as one change set, exactly as the cycle does.

Every file under DIR (hidden ones and `.git` included, symlinks not followed) is one entry of the change
set, its path relative to DIR; DIR is the root that symlinks and escapes are checked against.  The policy
is the cycle's: KAIZEN_SOURCE_ROOTS, KAIZEN_ALLOWED_SUFFIXES, the size limits and the component's entry of
KAIZEN_VALIDATION_POLICIES.  Exit 0: acceptable; 1: rejected (every finding printed); 2: usage error.
See docs/validation.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson

from agents.improvement.logic.validation import ValidationResult, policy_from_settings, validate
from connectors.actuators.base import InvalidIdentifier, check_identifier
from streams.errors import InputError

READ_LIMIT = 16 * 1024 * 1024  # bigger files are refused by size anyway; read no more than this of them


class UsageError(InputError):
    """A wrong invocation: printed as `error: <what> — <what to do>`, exit 2."""


def collect(directory: Path) -> dict[str, bytes]:
    """{path relative to DIR: content}; symlinks and special files are entries with no content (the path
    rules refuse them), directories are walked without following links."""
    out: dict[str, bytes] = {}
    for base, dirs, names in os.walk(directory, followlinks=False):
        for name in sorted(dirs):
            full = Path(base) / name
            if full.is_symlink():
                out[full.relative_to(directory).as_posix()] = b""
        for name in sorted(names):
            full = Path(base) / name
            rel = full.relative_to(directory).as_posix()
            if full.is_symlink() or not full.is_file():
                out[rel] = b""
                continue
            with full.open("rb") as fh:
                out[rel] = fh.read(READ_LIMIT)
    return out


def run(directory: Path, tenant: str, component: str | None, system_wide: bool, settings: Any) -> ValidationResult:
    """The validation the cycle runs, on DIR's files; UsageError for a wrong invocation."""
    if not directory.exists():
        raise UsageError(f"{directory} does not exist — pass the directory holding the change set")
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory — pass the directory holding the change set")
    try:
        check_identifier(tenant, "tenant")
        if component is not None:
            check_identifier(component, "component")
    except InvalidIdentifier as exc:
        raise UsageError(f"{exc} — use the tenant/component id the cycle serves") from None
    try:
        policy = policy_from_settings(settings, component)
    except ValueError as exc:
        raise UsageError(f"invalid KAIZEN_VALIDATION_POLICIES: {exc} — fix the policy setting") from None
    return validate(collect(directory), None if system_wide else tenant, policy, directory)


def report(result: ValidationResult, directory: Path, tenant: str, component: str | None, as_json: bool) -> str:
    if as_json:
        return orjson.dumps({"directory": str(directory), "tenant": tenant, "component": component,
                             **result.as_dict()}, option=orjson.OPT_INDENT_2).decode()
    lines = [f"{f.path}:{f.line}: [{f.rule}] {f.message} ({f.check})" for f in result.findings]
    if result.ok:
        lines.append(f"ok: {len(result.files)} file(s) acceptable as one change set for tenant {tenant}")
    else:
        lines.append(f"rejected: {len(result.findings)} finding(s) in "
                     f"{len({f.path for f in result.findings})} path(s) of {len(result.files)} file(s)")
    return "\n".join(lines)


def main(directory: Path, tenant: str, component: str | None, system_wide: bool, as_json: bool,
         settings: Any) -> int:
    try:
        result = run(directory, tenant, component, system_wide, settings)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(result, directory, tenant, component, as_json))
    return 0 if result.ok else 1
