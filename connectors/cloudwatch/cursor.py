"""Connector cursors: one small JSON file per source under <KAIZEN_DATA_DIR>/cursors, replaced atomically."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import orjson


class CursorStore:
    """Where each source remembers how far it got (written only after Kafka acknowledged the records).

    A cursor is a JSON object; it is written to a temporary file, fsynced and renamed over the old one,
    so a crash leaves either the old or the new cursor, never a torn one. A cursor that cannot be read
    raises: silently starting over would repeat or skip windows.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:80]
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        return self.directory / f"{safe}-{digest}.json"

    def load(self, name: str) -> dict[str, Any]:
        p = self.path(name)
        if not p.exists():
            return {}
        data = orjson.loads(p.read_bytes())
        if not isinstance(data, dict):
            raise ValueError(f"cursor {p} does not hold a JSON object")
        return data

    def save(self, name: str, value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        p = self.path(name)
        tmp = p.with_suffix(".json.tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"name": name, **value}, option=orjson.OPT_SORT_KEYS))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
