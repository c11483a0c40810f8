"""Outside clients against a running `kaizen run`, as the README shows them: it says which broker and AWS
endpoint it uses and hands over working keys; the README's consumer examples (confluent-kafka, `kaizen tail`,
kcat where its librdkafka can talk to the embedded broker) print improvement events within 10 s of
starting; the events validate against docs/asyncapi.yaml; a wrong MCP token is a plain 401 that the MCP
Inspector reports as an auth error."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from kaizen.asyncapi import message_schema
from kaizen.embedded import _die_with_parent, free_port
from streams import topics as T
from tests.conftest import Backend
from tests.integration.test_cycle import _cmd, _insight, _send
from tests.integration.test_mcp_transports import inspector_bin
from tests.kafka_utils import ARTIFACTS, collect

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ARRIVE_WITHIN = 10.0  # seconds from starting a client to its first improvement event


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path
    bootstrap: str
    base: str  # the MCP server's http://host:port

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


def _wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if re.search(pattern, line):
                return line
        if proc.poll() is not None:
            pytest.fail(f"kaizen run exited ({proc.returncode}): {log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"kaizen run printed no line like {pattern!r} within {timeout:.0f}s: {log.read_text()[-3000:]}")


def spawn_kaizen_run(backend: Backend, data_dir: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, int, int]:
    """`kaizen run --no-demo --no-connectors` on its own embedded broker, AWS pointed at the test endpoint:
    (process, its log, Kafka port, MCP port). JSON log lines, so the pids it started can be read back."""
    kafka_port, mcp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_BOOTSTRAP", "SELF_BUILDING_MCP", "KAIZEN_DEMO", "KAIZEN_DATA_DIR"))}
    env.update(backend.aws_env(), KAIZEN_EMBEDDED_KAFKA_PORT=str(kafka_port), SELF_BUILDING_MCP_PORT=str(mcp_port),
               KAIZEN_DATA_DIR=str(data_dir), KAIZEN_BROKER_SESSION_TIMEOUT="4", KAIZEN_LOG_JSON="true")
    log = ARTIFACTS / "logs" / f"{name}-{uuid.uuid4().hex[:8]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kaizen.cli", "run", "--no-demo", "--no-connectors"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
    return proc, log, kafka_port, mcp_port


@pytest.fixture(scope="module")
def kaizen_run(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`kaizen run --no-demo --no-connectors` on its own embedded broker, AWS pointed at the test endpoint."""
    proc, log, kafka_port, mcp_port = spawn_kaizen_run(backend, tmp_path_factory.mktemp("run"), "consumers-run")
    try:
        _wait_for_line(log, r"^logs: ", proc, 90)
        yield Running(proc, log, f"127.0.0.1:{kafka_port}", f"http://127.0.0.1:{mcp_port}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class Improvement:
    improvement_id: str
    tenant: str


@pytest.fixture(scope="module")
async def improvement(kaizen_run: Running) -> AsyncIterator[Improvement]:
    """One improvement cycle on the running stack: an insight, its opportunity, a manual trigger."""
    be = Backend(kaizen_run.bootstrap, "", "embedded")
    tenant = f"cons-{uuid.uuid4().hex[:6]}"
    await _send(be, T.INSIGHTS, tenant, _insight(tenant, "api").to_bytes())
    opps = await collect(be.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=90,
                         keep=lambda _t, r: r.get("tenant_id") == tenant)
    assert opps, "the insight did not become an opportunity on the running stack"
    await _send(be, T.COMMANDS, tenant, _cmd("trigger_cycle", "alice", ["operator"], tenant,
                                             analysis_window_hours=1, max_improvements=1))
    evs = await collect(be.kafka_bootstrap, [T.IMPROVEMENT_EVENTS], lambda ps: len(ps) >= 2, timeout=90,
                        keep=lambda _t, r: r.get("tenant_id") == tenant)
    assert evs, "the cycle wrote no improvement events"
    yield Improvement(str(evs[0][1]["improvement_id"]), tenant)


def readme_example(name: str) -> tuple[str, str]:
    """(language, code) of the README block under `<!-- consumer-example:NAME -->`."""
    m = re.search(rf"<!-- consumer-example:{re.escape(name)} -->\s*```(\w+)\n(.*?)```", README.read_text("utf-8"),
                  flags=re.DOTALL)
    assert m, f"README has no consumer example {name!r}"
    return m.group(1), m.group(2)


def first_line_with(cmd: list[str], needle: str, env: dict[str, str], timeout: float = 30.0
                    ) -> tuple[float | None, str]:
    """Start `cmd`; seconds until a stdout line contains `needle` (None if it never did), and its output."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.monotonic() - start, line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    found: float | None = None
    try:
        while found is None and time.monotonic() - start < timeout:
            try:
                at, line = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None and not reader.is_alive():
                    break
                continue
            seen.append(line)
            if needle in line:
                found = at
    finally:
        proc.kill()
        proc.wait(10)
    return found, "\n".join(seen)[-3000:]


def _client_env(run: Running) -> dict[str, str]:
    return {**os.environ, "B": run.bootstrap, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def test_run_says_what_it_uses_and_hands_over_working_keys(kaizen_run: Running, backend: Backend) -> None:
    lines = kaizen_run.lines()
    assert f"kafka: {kaizen_run.bootstrap} (embedded Tansu broker, in memory)" in lines
    assert f"aws: {backend.aws_endpoint} (AWS_ENDPOINT_URL)" in lines  # what the children use, not "real AWS"
    dash = next(ln for ln in lines if ln.startswith("dashboard "))
    url = re.search(r"(http://\S+/\?token=\S+)", dash)
    assert url, dash
    token = url.group(1).split("token=", 1)[1]
    state = httpx.get(f"{kaizen_run.base}/api/state", params={"token": token}, timeout=20)
    assert state.status_code == 200 and "status" in state.json()
    assert httpx.get(url.group(1), timeout=20).status_code == 200


async def test_inspector_line_works_and_a_wrong_token_is_a_plain_401(kaizen_run: Running, tmp_path: Path) -> None:
    binary = await inspector_bin()
    line = next(ln for ln in kaizen_run.lines() if ln.startswith("MCP Inspector "))
    cmd = shlex.split(line.split(": ", 1)[1])
    assert cmd[:2] == ["npx", "@modelcontextprotocol/inspector@2"], cmd
    env = {**os.environ, "HOME": str(tmp_path), "MCP_CATALOG_PATH": str(tmp_path / "catalog.json")}
    ok = subprocess.run([str(binary), *cmd[2:]], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout[-1500:] + ok.stderr[-1500:]
    assert "trigger_improvement_cycle" in ok.stdout

    refused = httpx.post(f"{kaizen_run.base}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                         headers={"Authorization": "Bearer wrong-token-0000000000",
                                  "Accept": "application/json, text/event-stream"}, timeout=20)
    assert refused.status_code == 401
    assert "www-authenticate" not in {k.lower() for k in refused.headers}, refused.headers
    assert "missing or invalid bearer token" in refused.json()["error_description"]
    bad = [c if "Bearer" not in c else "Authorization: Bearer wrong-token-0000000000" for c in cmd[2:]]
    res = subprocess.run([str(binary), *bad], capture_output=True, text=True, env=env, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "auth_required" in out and "missing or invalid bearer token" in out, out[-1500:]
    assert "OAuth" not in out, out[-1500:]


async def test_confluent_kafka_example_receives_events_within_10s(kaizen_run: Running,
                                                                  improvement: Improvement,
                                                                  tmp_path: Path) -> None:
    lang, code = readme_example("confluent-kafka")
    assert lang == "python" and "session.timeout.ms" in code
    script = tmp_path / "consume.py"
    script.write_text(code, encoding="utf-8")
    took, out = await asyncio.to_thread(first_line_with, [sys.executable, str(script)],
                                        improvement.improvement_id, _client_env(kaizen_run))
    assert took is not None, f"no improvement event in 30 s: {out}"
    assert took < ARRIVE_WITHIN, f"first improvement event after {took:.1f}s: {out}"
    print(f"confluent-kafka example: first improvement event after {took:.1f} s")

    # The events on the topic are what docs/asyncapi.yaml says they are.
    from confluent_kafka import Consumer, TopicPartition

    schema = message_schema(yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text("utf-8")),
                            T.IMPROVEMENT_EVENTS)
    consumer = Consumer({"bootstrap.servers": kaizen_run.bootstrap, "group.id": f"v-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(T.IMPROVEMENT_EVENTS, p, 0) for p in range(4)])
    mine: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(mine) < 2:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error() and msg.value():
            ev = json.loads(msg.value() or b"{}")
            if ev.get("improvement_id") == improvement.improvement_id:
                mine.append(ev)
    consumer.close()
    assert mine
    for ev in mine:
        jsonschema.validate(ev, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**mine[0], "status": "not-a-status"}, schema)


async def test_kaizen_tail_example_receives_events_within_10s(kaizen_run: Running,
                                                              improvement: Improvement) -> None:
    lang, code = readme_example("kaizen-tail")
    assert lang == "sh"
    took, out = await asyncio.to_thread(first_line_with, ["bash", "-c", code.strip()], improvement.improvement_id,
                                        _client_env(kaizen_run))
    assert took is not None and took < ARRIVE_WITHIN, f"{took}: {out}"
    print(f"kaizen tail example: first improvement event after {took:.1f} s")


def _librdkafka_version(kcat: str) -> tuple[int, ...]:
    out = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


async def test_kcat_example_where_its_librdkafka_can(kaizen_run: Running, improvement: Improvement) -> None:
    """kcat on a current librdkafka prints the events within 10 s; Debian 12's kcat (librdkafka 2.0.2) cannot
    talk to the embedded broker at all, as the README's kcat note says — checked here, not assumed."""
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (.ci/run installs it: apt-get install -y kcat)")
    lang, code = readme_example("kcat")
    assert lang == "sh"
    took, out = await asyncio.to_thread(first_line_with, ["bash", "-c", code.strip()], improvement.improvement_id,
                                        _client_env(kaizen_run), 15.0)
    if _librdkafka_version(kcat) >= (2, 1, 0):
        assert took is not None and took < ARRIVE_WITHIN, f"{took}: {out}"
    else:
        assert took is None and "ApiVersionRequest failed" in out, out
        note = README.read_text("utf-8")
        assert "librdkafka 2.0.2" in note and "ApiVersionRequest failed" in note
