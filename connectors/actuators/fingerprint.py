"""SHA-256 fingerprints of deployed artefacts (parameter values, file contents) and their verification."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

PREFIX = "sha256:"
ABSENT = PREFIX + hashlib.sha256(b"\x00kaizen:absent").hexdigest()  # fingerprint of "no value / no file"


def canonical_bytes(value: Any) -> bytes:
    """Canonical bytes: str as UTF-8 (so a file's fingerprint equals `sha256sum` of it), bytes as is,
    anything else (numbers, bools, dicts, lists) as sorted-key JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def fingerprint(value: Any) -> str:
    """`sha256:<hex>` of the artefact; None (absent) has its own distinct fingerprint."""
    if value is None:
        return ABSENT
    return PREFIX + hashlib.sha256(canonical_bytes(value)).hexdigest()


def fingerprint_files(files: dict[str, str]) -> str:
    """One fingerprint of a set of files (path and content, order-independent)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\x00" + fingerprint(files[path]).encode() + b"\n")
    return PREFIX + h.hexdigest()


def verify(current: Any, recorded: str) -> bool:
    """True when the artefact as it is now still has the fingerprint recorded at deployment."""
    return hmac.compare_digest(fingerprint(current), recorded)
