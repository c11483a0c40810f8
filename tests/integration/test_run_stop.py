"""`kaizen run` stops every process it started, also when Ctrl-C comes twice (an impatient user, or a
wrapper such as `timeout` passing the signal on to its process group): the second one arrived while the
children were being stopped, cut the stopping short and left the rest running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import orjson

from kaizen.embedded import _die_with_parent, free_port
from tests.conftest import Backend
from tests.integration.test_consumers import _wait_for_line
from tests.kafka_utils import ARTIFACTS


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


def test_ctrl_c_twice_still_stops_every_process(backend: Backend, tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_BOOTSTRAP", "SELF_BUILDING_MCP", "KAIZEN_DEMO", "KAIZEN_DATA_DIR"))}
    env.update(backend.aws_env(), KAIZEN_EMBEDDED_KAFKA_PORT=str(free_port()),
               SELF_BUILDING_MCP_PORT=str(free_port()), KAIZEN_DATA_DIR=str(tmp_path),
               KAIZEN_BROKER_SESSION_TIMEOUT="4", KAIZEN_LOG_JSON="true")
    log = ARTIFACTS / "logs" / f"run-stop-{uuid.uuid4().hex[:8]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kaizen.cli", "run", "--no-demo", "--no-connectors"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
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
