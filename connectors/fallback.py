"""The local fallback source: append-only JSONL files of metrics, logs and events, read with an offset cursor."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from connectors.cloudwatch.cursor import CursorStore
from streams.records import TELEMETRY_MODELS, DeadLetter, Record

FALLBACK_FILES: dict[str, str] = {"metric": "metrics.jsonl", "log": "logs.jsonl", "event": "events.jsonl"}


@dataclass
class FallbackBatch:
    """Records read from one fallback file, and the cursor to store once they are published."""

    kind: str
    records: list[Record] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    offset: int = 0
    inode: int | None = None


class FallbackReader:
    """Reads `<CLOUDWATCH_FALLBACK_DIR>/{metrics,logs,events}.jsonl`, one record per line.

    Only complete lines (ending in a newline) are read, so a writer appending concurrently is never
    read half-way. The byte offset is kept in the cursor store (key `fallback:<kind>`) and saved by
    `commit` after Kafka acknowledged the batch; a file replaced (new inode) or truncated is read from
    its start. Lines that are not valid records become dead letters with the original text.
    """

    def __init__(self, directory: Path, cursors: CursorStore, *, max_records: int = 5000) -> None:
        self.directory = Path(directory)
        self.cursors = cursors
        self.max_records = max_records
        self.read_counts: dict[str, int] = {k: 0 for k in FALLBACK_FILES}

    def path(self, kind: str) -> Path:
        return self.directory / FALLBACK_FILES[kind]

    def read(self, kind: str) -> FallbackBatch:
        path = self.path(kind)
        cursor = self.cursors.load(f"fallback:{kind}")
        offset = int(cursor.get("offset", 0))
        batch = FallbackBatch(kind=kind, offset=offset, inode=cursor.get("inode"))
        if not path.exists():
            return batch
        st = os.stat(path)
        if (batch.inode is not None and st.st_ino != batch.inode) or st.st_size < offset:
            offset = 0
        batch.inode = st.st_ino
        model = TELEMETRY_MODELS[kind]
        with open(path, "rb") as fh:
            fh.seek(offset)
            while len(batch.records) + len(batch.dead) < self.max_records:
                line = fh.readline()
                if not line or not line.endswith(b"\n"):
                    break
                offset += len(line)
                text = line.strip()
                if not text:
                    continue
                try:
                    batch.records.append(model.model_validate_json(text))
                except ValidationError as exc:
                    batch.dead.append(DeadLetter(
                        reason=f"invalid {kind} line in fallback file {path.name}", error=str(exc)[:2000],
                        source_topic=f"fallback:{path}", offset=offset - len(line),
                        original=text.decode("utf-8", errors="backslashreplace"),
                    ))
        batch.offset = offset
        return batch

    def commit(self, batch: FallbackBatch) -> None:
        self.cursors.save(f"fallback:{batch.kind}", {"offset": batch.offset, "inode": batch.inode})
        self.read_counts[batch.kind] += len(batch.records)
