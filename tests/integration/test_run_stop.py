"""`kaizen run` stops every process it started, also when Ctrl-C comes twice (an impatient user, or a
wrapper such as `timeout` passing the signal on to its process group): the second one arrived while the
children were being stopped, cut the stopping short and left the rest running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson

from tests.conftest import Backend
from tests.integration.test_consumers import _wait_for_line, spawn_kaizen_run


def _started_pids(text: str) -> dict[str, int]:
    """Every process the run logged as started (its broker, AWS endpoint and children), by name."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        rec = orjson.loads(line)
        if "pid" in rec and rec.get("event") in ("started", "embedded broker started", "embedded AWS endpoint started"):
            out[str(rec.get("process", rec["event"]))] = int(rec["pid"])
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie no one reaped yet has stopped running
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_ctrl_c_twice_still_stops_every_process(backend: Backend, tmp_path: Path) -> None:
    proc, log, _kafka, _mcp = spawn_kaizen_run(backend, tmp_path, "run-stop")
    try:
        _wait_for_line(log, r"^logs: ", proc, 90)
        pids = _started_pids(log.read_text(encoding="utf-8", errors="replace"))
        assert {"worker-0", "mcp", "embedded broker started"} <= set(pids), pids
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)   # the first is being handled: the children are being stopped
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "stopped every process kaizen started" in text, text[-3000:]
        assert proc.returncode == 0, (proc.returncode, text[-3000:])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
            time.sleep(0.2)
        assert not [n for n, p in pids.items() if _alive(p)], f"left running: {pids}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
