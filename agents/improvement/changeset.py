"""The cycle's validation of a change set: the same `validate` as `kaizen validate`, plus the diff for the approver.

The policy comes from the settings (KAIZEN_SOURCE_ROOTS & co, the component's KAIZEN_VALIDATION_POLICIES
entry) and the git working tree is the root symlinks and escapes are checked against — exactly what
`kaizen validate --tenant T --component C DIR` does with DIR as the root (see docs/validation.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.improvement.logic.validation import (
    Finding,
    ValidationResult,
    change_diff,
    policy_from_settings,
    validate,
)
from connectors.actuators.base import Actuator

# The default change-set limit (400 kB) gives a diff well below this; only an operator-raised limit truncates.
MAX_DIFF_CHARS = 600_000


def policy_error(exc: ValueError) -> ValidationResult:
    return ValidationResult.of([Finding("paths", "(policy)", 0, "policy.invalid", str(exc))], [])


async def check_change_set(settings: Any, files_actuator: Actuator | None, files: Mapping[str, str],
                           tenant_id: str | None, component: str | None) -> tuple[ValidationResult, dict[str, Any]]:
    """(result, the `validation` record an event carries: ok, checks, every finding, the full diff)."""
    try:
        policy = policy_from_settings(settings, component)
    except ValueError as exc:  # a broken KAIZEN_VALIDATION_POLICIES refuses every change until fixed
        res = policy_error(exc)
        return res, {**res.as_dict(), "diff": ""}
    repo = getattr(files_actuator, "repo", None)
    root = Path(repo) if repo is not None else None
    # bandit and the AST passes take CPU time: off the event loop
    res = await asyncio.to_thread(validate, dict(files), tenant_id, policy, root)
    unsafe = {f.path for f in res.findings if f.check == "paths"}
    current: dict[str, str | None] = {}
    for path in files:
        if files_actuator is None or path in unsafe:
            current[path] = None  # an unsafe path is never looked up
            continue
        try:
            current[path] = await files_actuator.read(path)
        except ValueError:
            current[path] = None
    diff = change_diff(dict(files), current)
    if len(diff) > MAX_DIFF_CHARS:  # an event must stay below the broker's message size
        diff = diff[:MAX_DIFF_CHARS] + f"\n... diff truncated at {MAX_DIFF_CHARS} characters; the files are in generated_code\n"
    return res, {**res.as_dict(), "diff": diff}
