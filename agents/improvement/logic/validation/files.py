"""Per-type checks of one file's content (Python is parsed by the caller): JSON, YAML, TOML, text; sizes."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import PurePosixPath

import yaml

from agents.improvement.logic.validation.findings import Finding
from agents.improvement.logic.validation.policy import Policy

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode(path: str, content: str | bytes) -> tuple[str | None, list[Finding]]:
    """UTF-8 text or a finding (generated files are text; a binary blob is never acceptable)."""
    if isinstance(content, str):
        return content, []
    try:
        return content.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [Finding("syntax", path, 0, "text.encoding", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]


def check_sizes(texts: dict[str, str], policy: Policy) -> list[Finding]:
    out: list[Finding] = []
    if len(texts) > policy.max_files:
        out.append(Finding("size", "(change set)", 0, "size.count",
                           f"{len(texts)} files; at most {policy.max_files} per change set"))
    total = 0
    for path, text in sorted(texts.items()):
        n = len(text.encode("utf-8"))
        total += n
        if n > policy.max_file_bytes:
            out.append(Finding("size", path, 0, "size.file", f"{n} bytes; at most {policy.max_file_bytes} per file"))
    if total > policy.max_change_bytes:
        out.append(Finding("size", "(change set)", 0, "size.total",
                           f"{total} bytes in all; at most {policy.max_change_bytes} per change set"))
    return out


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, max(0, pos)) + 1


def check_content(path: str, text: str) -> list[Finding]:
    """Parse data files by their suffix; every file must be clean text (no NUL or control characters)."""
    out: list[Finding] = []
    m = CONTROL.search(text)
    if m:
        out.append(Finding("syntax", path, _line_of(text, m.start()), "text.control",
                           f"control character {m.group()!r} in a text file"))
    suffix = PurePosixPath(path).suffix.lower()
    try:
        if suffix == ".json":
            json.loads(text)
        elif suffix in (".yaml", ".yml"):
            list(yaml.safe_load_all(text))  # safe_load refuses python/object tags
        elif suffix == ".toml":
            tomllib.loads(text)
    except json.JSONDecodeError as exc:
        out.append(Finding("syntax", path, exc.lineno, "syntax.json", exc.msg))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        out.append(Finding("syntax", path, (mark.line + 1) if mark else 0, "syntax.yaml", str(exc).splitlines()[0]))
    except tomllib.TOMLDecodeError as exc:
        out.append(Finding("syntax", path, 0, "syntax.toml", str(exc)))
    return out
