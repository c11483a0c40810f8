"""The applied-changes journal: every change an actuator may have made, in a file outside the broker.

A broker that comes back empty (the embedded one keeps its log in memory), a deleted or expired
topic, or a worker on a fresh changelog loses the improvement events; the targets kaizen changed are
still changed. So before an actuator writes, the change is appended here (`intent`: actuator, full
key, the value read just before — null for absent — the new value and its fingerprint); after the
write, `applied` (with the actuator's version); once undone and read back, `undone`; a change kept
on purpose (a completed improvement's full rollout) `kept`; a target someone else changed since,
`conflict`. A change whose last line is `intent` or `applied` is outstanding: on start and
periodically the worker reconciles these with the folded improvement states and rolls back every
one whose improvement is lost or finished without undoing it (agents/improvement/rollback.py).

One JSON object per line, appended with O_APPEND and fsynced (lines are far below PIPE_BUF, so
workers sharing KAIZEN_DATA_DIR on one host do not interleave). The first `intent` of a (improvement,
key) keeps the previous value: a re-run after a crash reads the improvement's own value back and
must not take it for the previous one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from connectors.actuators.base import AppliedChange

FILE_NAME = "applied-changes.jsonl"
OUTSTANDING = frozenset({"intent", "applied"})
FINISHED = frozenset({"undone", "kept", "conflict"})


class AppliedJournal:
    """Append-only journal file; all methods are blocking (call them off the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, op: str, change: AppliedChange, tenant_id: str = "", **extra: Any) -> None:
        line = {"op": op, "at": time.time(), "tenant_id": tenant_id, **change.as_dict(), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(line) + b"\n"
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    data = b"\n" + data  # a line torn by a crash mid-write must not swallow this one
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def lines(self) -> list[dict[str, Any]]:
        """Every readable line (a line torn by a crash mid-write is skipped)."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with self.path.open("rb") as fh:
            for raw in fh:
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(obj, dict) and obj.get("improvement_id") and obj.get("key"):
                    out.append(obj)
        return out

    def changes(self) -> dict[str, dict[str, dict[str, Any]]]:
        """improvement id -> full key -> the change's merged record (`op` is its latest state)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for line in self.lines():
            per = out.setdefault(str(line["improvement_id"]), {})
            key = str(line["key"])
            known = per.get(key)
            if known is None or (line["op"] == "intent" and known["op"] in FINISHED):
                per[key] = dict(line)  # first record, or the same key applied again after it was undone
                continue
            merged = {**known, "op": line["op"], "at": line["at"]}
            if line.get("version") and line["op"] == "applied":
                merged["version"] = line["version"]
            per[key] = merged
        return out

    def outstanding(self) -> dict[str, list[AppliedChange]]:
        """improvement id -> changes that may still be applied (last state intent or applied)."""
        out: dict[str, list[AppliedChange]] = {}
        for imp, per in self.changes().items():
            live = [AppliedChange.from_dict(rec) for rec in per.values() if rec["op"] in OUTSTANDING]
            if live:
                out[imp] = live
        return out

    def tenant_of(self, improvement_id: str) -> str:
        for rec in self.changes().get(improvement_id, {}).values():
            if rec.get("tenant_id"):
                return str(rec["tenant_id"])
        return ""

    def first_previous(self, improvement_id: str, key: str) -> tuple[bool, str | None]:
        """(found, previous) of the outstanding record of this change, if the journal has one."""
        rec = self.changes().get(improvement_id, {}).get(key)
        if rec is None or rec["op"] not in OUTSTANDING:
            return False, None
        prev = rec.get("previous")
        return True, None if prev is None else str(prev)
