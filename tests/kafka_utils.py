"""Test helpers that talk to the real broker: produce records, read topics, run kaizen processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kaizen.embedded import ManagedProcess, _die_with_parent

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


async def produce(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for v in values:
            await p.send_and_wait(topic, v, key=key)
    finally:
        await p.stop()


def envelope(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"records": records})


async def collect(bootstrap: str, topics: list[str], until: Callable[[list[tuple[str, dict[str, Any]]]], bool],
                  timeout: float = 40.0, keep: Callable[[str, dict[str, Any]], bool] | None = None,
                  settle: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
    """Read the topics from the beginning; returns (topic, record) pairs — envelopes are unpacked —
    once `until(pairs)` holds (then reads `settle` seconds more, to catch extras), or at timeout."""
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                         enable_auto_commit=False)
    await c.start()
    out: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            batch = await c.getmany(timeout_ms=300)
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.value is None:
                        continue
                    try:
                        obj = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        continue
                    items = obj["records"] if isinstance(obj, dict) and isinstance(obj.get("records"), list) else [obj]
                    for it in items:
                        if keep is None or keep(tp.topic, it):
                            out.append((tp.topic, it))
            if settle_until is None and until(out):
                settle_until = time.monotonic() + settle
    finally:
        await c.stop()
    return out


def start_kaizen(args: list[str], env: dict[str, str], name: str) -> ManagedProcess:
    """Start `python -m kaizen.cli ARGS` with env, logging to test-artifacts/logs/NAME-<random>.log: a log of
    its own, so a test reading it never sees another run's lines (a reused, appended file did: a stale
    line once made a store-rebuild assertion pass that the current code failed)."""
    log_dir = ARTIFACTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}-{uuid.uuid4().hex[:8]}.log"
    out = open(path, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "kaizen.cli", *args], env={**os.environ, **env},
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    return ManagedProcess(name, proc, 0, path)


def run(coro: Any) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro) if False else asyncio.run(coro)
