"""Healing history on the `healing.history` topic (the group's one history) and its JSONL export; execution-metrics JSONL."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import orjson
from pydantic import BaseModel, ValidationError

from agents.healing.logic.effects import Effect
from agents.healing.logic.execution_metrics import ExecutionMetrics
from agents.healing.logic.healing import ActionPlan, HealingConfig, HealingRecord, TriggerFiring
from streams import topics as T

__all__ = [
    "HEALING_CONFIG_ENV",
    "HealingHistory",
    "append_jsonl",
    "history_lines",
    "read_history_topic",
    "read_topic_values",
    "log_execution_metrics",
    "log_execution_metrics_async",
    "load_healing_config",
    "read_execution_metrics",
]

HEALING_CONFIG_ENV = "KAIZEN_HEALING_CONFIG"


def append_jsonl(lines: Iterable[bytes], path: Path) -> bool:
    """Append complete lines (newline added) and flush; on I/O error: message on stderr, return False."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab", buffering=0) as fh:
            fh.write(b"".join(line + b"\n" for line in lines))
        return True
    except OSError as exc:
        print(f"kaizen: could not append to {path}: {exc}", file=sys.stderr)
        return False


def log_execution_metrics(metrics: ExecutionMetrics, path: Path) -> bool:
    """One JSON line per execution, appended and flushed at once; never raises."""
    return append_jsonl([orjson.dumps(metrics.model_dump(mode="json"))], path)


async def log_execution_metrics_async(metrics: ExecutionMetrics, path: Path) -> bool:
    """The same from an event loop: the file write runs in a worker thread."""
    return await asyncio.to_thread(log_execution_metrics, metrics, path)


def read_execution_metrics(
    path: Path, offset: int = 0, errors: list[str] | None = None
) -> tuple[list[ExecutionMetrics], int]:
    """Records from byte offset up to the last complete line, and the offset to continue from.

    A trailing line without its newline (a writer mid-append) is left for the next call. Lines that are
    not valid ExecutionMetrics are reported on stderr (and appended to `errors` if given) and skipped.
    A missing file reads as empty.
    """
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    out: list[ExecutionMetrics] = []
    for lineno, line in enumerate(data[: end + 1].splitlines()):
        if not line.strip():
            continue
        try:
            out.append(ExecutionMetrics.model_validate_json(line))
        except ValidationError as exc:
            msg = f"{path}@{offset}+line{lineno}: invalid execution metrics: {exc.errors()[0]['msg']}"
            print(f"kaizen: {msg}", file=sys.stderr)
            if errors is not None:
                errors.append(msg)
    return out, offset + end + 1


def load_healing_config(path: Path | None = None, environ: dict[str, str] | None = None) -> HealingConfig:
    """The healing config from `path`, else from the file named by KAIZEN_HEALING_CONFIG, else the defaults.

    Raises ValueError naming the file when it cannot be read or parsed.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(HEALING_CONFIG_ENV):
        path = Path(env[HEALING_CONFIG_ENV])
    if path is None:
        return HealingConfig()
    try:
        return HealingConfig.from_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read healing config {path}: {exc.strerror}") from exc
    except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
        raise ValueError(f"invalid healing config {path}: {exc}") from exc


class HealingHistory:
    """The JSONL export of the healing history: append-only files per kind and day under one directory
    (`kaizen healing history --export DIR`); the history itself is the healing.history topic.

    Files: triggers-, actions- and effects-YYYYMMDD.jsonl.
    Writes never raise (False on I/O error); the *_async variants run them off the event loop.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _file(self, rec: HealingRecord) -> Path:
        return self.directory / f"{rec.kind}s-{rec.timestamp:%Y%m%d}.jsonl"

    def append(self, records: Iterable[HealingRecord]) -> bool:
        ok = True
        by_file: dict[Path, list[bytes]] = {}
        for rec in records:
            by_file.setdefault(self._file(rec), []).append(orjson.dumps(rec.model_dump(mode="json")))
        for path, lines in by_file.items():
            ok = append_jsonl(lines, path) and ok
        return ok

    def record(self, firings: Iterable[TriggerFiring] = (), actions: Iterable[ActionPlan] = ()) -> bool:
        recs = [HealingRecord(kind="trigger", timestamp=f.timestamp, name=f.trigger, component=f.component,
                              tenant_id=f.tenant_id, detail=_detail(f)) for f in firings]
        recs += [HealingRecord(kind="action", timestamp=a.timestamp, name=a.action, component=a.component,
                               tenant_id=a.tenant_id, detail=_detail(a)) for a in actions]
        return self.append(recs)

    async def record_async(self, firings: Iterable[TriggerFiring] = (), actions: Iterable[ActionPlan] = ()) -> bool:
        return await asyncio.to_thread(self.record, list(firings), list(actions))

    def read(self, limit: int | None = None, kind: str | None = None) -> list[HealingRecord]:
        """The newest `limit` records (all if None), oldest first; unreadable lines are reported and skipped."""
        recs: list[HealingRecord] = []
        if not self.directory.is_dir():
            return recs
        for path in sorted(self.directory.glob("*-*.jsonl")):
            if kind is not None and not path.name.startswith(f"{kind}s-"):
                continue
            try:
                lines = path.read_bytes().splitlines()
            except OSError as exc:
                print(f"kaizen: cannot read {path}: {exc}", file=sys.stderr)
                continue
            for line in lines:
                try:
                    recs.append(HealingRecord.model_validate_json(line))
                except ValidationError:
                    print(f"kaizen: skipping invalid healing history line in {path}", file=sys.stderr)
        recs.sort(key=lambda r: (r.timestamp, r.kind != "trigger"))  # a firing before its actions
        return recs if limit is None else recs[-limit:] if limit > 0 else []


def _detail(model: BaseModel) -> dict[str, object]:
    return model.model_dump(mode="json", exclude={"timestamp", "component", "tenant_id"})


def _records(firings: Iterable[TriggerFiring], plans: Iterable[ActionPlan],
             effects: Iterable[Effect]) -> list[HealingRecord]:
    recs = [HealingRecord(kind="trigger", timestamp=f.timestamp, name=f.trigger, component=f.component,
                          tenant_id=f.tenant_id, detail=_detail(f)) for f in firings]
    recs += [HealingRecord(kind="action", timestamp=a.timestamp, name=a.action, component=a.component,
                           tenant_id=a.tenant_id, detail=_detail(a)) for a in plans]
    for e in effects:
        line = e.history_record()
        recs.append(HealingRecord(kind="effect", timestamp=e.timestamp, name=e.action, component=e.component,
                                  tenant_id=e.tenant_id, detail={k: v for k, v in line.items() if k not in
                                                                 ("kind", "timestamp", "name", "component",
                                                                  "tenant_id")}))
    return recs


def history_lines(firings: Iterable[TriggerFiring], plans: Iterable[ActionPlan], effects: Iterable[Effect],
                  recorded_at: datetime) -> list[tuple[bytes, bytes]]:
    """(key, value) messages for `healing.history`: HealingRecord fields plus firing_id and recorded_at at the
    top, keyed by firing id (a firing, its actions and effects read back together)."""
    out: list[tuple[bytes, bytes]] = []
    for rec in _records(firings, plans, effects):
        fid = str(rec.detail.get("firing_id", ""))
        value = {**rec.model_dump(mode="json"), "firing_id": fid, "recorded_at": recorded_at.isoformat()}
        out.append((fid.encode(), orjson.dumps(value)))
    return out


async def read_topic_values(bootstrap: str, topic: str, empty_polls: int = 2, timeout: float = 30.0) -> list[bytes]:
    """Every value of a topic (all partitions), read until polls come back empty — not up to the end
    offsets, which Tansu reports wrong. A missing topic reads as empty."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[bytes] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        empty = 0
        deadline = asyncio.get_running_loop().time() + timeout
        while empty < empty_polls and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            if not batch:
                empty += 1
                continue
            empty = 0
            out.extend(m.value for msgs in batch.values() for m in msgs if m.value is not None)
    finally:
        await consumer.stop()
    return out


async def read_history_topic(bootstrap: str, topic: str = T.HEALING) -> list[HealingRecord]:
    """The group's healing history (every worker's firings, actions and effects), oldest first; a firing
    before its actions and effects. Invalid records are reported on stderr and skipped."""
    out: list[HealingRecord] = []
    for value in await read_topic_values(bootstrap, topic):
        try:
            out.append(HealingRecord.model_validate_json(value))
        except ValidationError:
            print(f"kaizen: skipping an invalid {topic} record", file=sys.stderr)
    order = {"trigger": 0, "action": 1, "effect": 2}
    out.sort(key=lambda r: (r.timestamp, order[r.kind]))
    return out
