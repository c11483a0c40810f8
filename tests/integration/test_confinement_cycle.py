"""Confinement through the improvement cycle: a local OpenAI-compatible endpoint answers with crafted code.

One tenant gets every bypass of issue 16 and the unsafe path cases in one answer → the improvement fails
with a finding per file and the git actuator writes nothing; another tenant gets a benign change → it waits
for approval with the full diff and no finding, and once approved is committed to the git working tree.
The cycle validates with the same function `kaizen validate` calls (agents/improvement/changeset.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.improvement.logic.lifecycle import fold_all
from streams import topics as T
from streams.commands import parse_command
from streams.records import ImprovementEvent, TelemetryInsight
from tests.conftest import Backend
from tests.kafka_utils import collect, start_kaizen
from tests.unit.test_validation import BYPASSES

BENIGN = "def ttl(seconds: int) -> int:\n    return max(1, seconds)\n"
PATH_CASES = {".git/config": "path.vcs", "../x.py": "path.parent", "/abs.py": "path.absolute",
              "generated/link/x.py": "path.symlink", "generated/evil/run.sh": "path.suffix",
              "svc/outside_root.py": "path.root"}


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of this module's own: its worker reads topics from the beginning (see tests/conftest.py)."""
    return own_backend


def _blocks(files: dict[str, str]) -> str:
    return "Here you are.\n" + "".join(f"```python:{p}\n{c}```\n" for p, c in files.items())


@pytest.fixture
def fake_llm(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(base url, {tenant: answer}): the answer is chosen by the tenant named in the prompt."""
    answers: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            prompt = body["messages"][-1]["content"]
            text = next((a for t, a in answers.items() if f"tenant: {t}" in prompt), "no code")
            data = orjson.dumps({"id": "x", "model": "crafted", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout


async def _send(backend: Backend, topic: str, key: str, value: bytes) -> None:
    p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await p.start()
    try:
        await p.send_and_wait(topic, value, key=key.encode())
    finally:
        await p.stop()


def _cmd(kind: str, actor: str, roles: list[str], tenant: str, improvement_id: str | None = None,
         **args: Any) -> bytes:
    raw = {"command_id": f"cmd-{uuid.uuid4().hex}", "kind": kind, "timestamp": datetime.now(UTC).isoformat(),
           "actor": actor, "roles": roles, "tenant_id": tenant, "improvement_id": improvement_id, **args}
    return parse_command(orjson.dumps(raw)).to_bytes()


async def _events(backend: Backend, tenant: str, until: Any, timeout: float = 90.0) -> list[dict[str, Any]]:
    pairs = await collect(backend.kafka_bootstrap, [T.IMPROVEMENT_EVENTS], lambda ps: until([r for _, r in ps]),
                          timeout=timeout, keep=lambda _t, r: r.get("tenant_id") == tenant)
    return [r for _, r in pairs]


def _status(*names: str) -> Any:
    return lambda evs: any(e["status"] in names for e in evs)


async def _start_code_improvement(backend: Backend, tenant: str, component: str) -> None:
    """An insight no playbook fits (a memory leak) → an opportunity → a cycle that asks the LLM for code."""
    ins = TelemetryInsight(insight_type="anomaly", severity="high", affected_component=component,
                           affected_tenants=[tenant], tenant_id=tenant, source="trends", problem_type="memory_leak",
                           confidence_score=0.9, timestamp=datetime.now(UTC), metrics={"change_pct": 100.0},
                           description=f"memory of {component} keeps growing")
    await _send(backend, T.INSIGHTS, tenant, ins.to_bytes())
    opps = await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=40,
                         keep=lambda _t, r: r.get("tenant_id") == tenant)
    assert opps, "the insight did not become an opportunity"
    await _send(backend, T.COMMANDS, tenant, _cmd("trigger_cycle", "alice", ["operator"], tenant,
                                                  analysis_window_hours=1, max_improvements=1))


async def test_crafted_llm_answers_are_confined(backend: Backend, tmp_path: Path,
                                               fake_llm: tuple[str, dict[str, str]]) -> None:
    url, answers = fake_llm
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    _git(tmp_path, "init", "-q", str(repo))
    (repo / "generated").mkdir()
    (repo / "generated" / "README.md").write_text("generated code\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "init")
    os.symlink(outside, repo / "generated" / "link")  # a link out of the working tree
    config_before = (repo / ".git" / "config").read_text()
    pwned = tmp_path / "pwned"

    evil, good = f"evil-{uuid.uuid4().hex[:6]}", f"good-{uuid.uuid4().hex[:6]}"
    evil_files = {f"generated/evil/{case}.py": code for case, (code, _) in BYPASSES.items()}
    evil_files.update({p: "X = 1\n" for p in PATH_CASES})
    evil_files[".git/config"] = f"[core]\n\tfsmonitor = touch {pwned}\n"
    answers[evil] = _blocks(evil_files)
    answers[good] = _blocks({"generated/billing/cache.py": BENIGN})

    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-conf-{uuid.uuid4().hex[:6]}", "KAIZEN_DATA_DIR": str(tmp_path),
           "KAIZEN_GIT_REPO": str(repo), "KAIZEN_ACTUATOR": "ssm", "LLM_PROVIDER": "openai", "LLM_BASE_URL": url,
           "LLM_API_KEY": "test", "MONITORING_DURATION_SECONDS": "30", "MONITORING_CHECK_INTERVAL_SECONDS": "0.5",
           "KAIZEN_COMMAND_MAX_AGE_SECONDS": "60"}
    worker = start_kaizen(["worker"], env, "confinement-worker")
    try:
        await _start_code_improvement(backend, evil, "billing")
        await _start_code_improvement(backend, good, "billing")
        evil_evs = await _events(backend, evil, _status("failed", "awaiting_approval", "deploying", "monitoring"))
        good_evs = await _events(backend, good, _status("awaiting_approval", "failed"))
        waiting = next(e for e in good_evs if e["status"] in ("awaiting_approval", "failed"))
        assert waiting["status"] == "awaiting_approval", waiting["reason"]
        await _send(backend, T.COMMANDS, waiting["improvement_id"],
                    _cmd("approve", "bob", ["approver"], good, waiting["improvement_id"], reason="reviewed diff"))
        deployed = await _events(backend, good, _status("monitoring", "failed", "rolling_back", "rolled_back"),
                                 timeout=60)
    finally:
        worker.stop()

    # the crafted answer: failed at validation with a finding per file, nothing written
    final = next(e for e in evil_evs if e["status"] in ("failed", "awaiting_approval", "deploying", "monitoring"))
    assert final["status"] == "failed" and final["reason"].startswith("validation failed"), final["reason"]
    findings = final["data"]["validation"]["findings"]
    by_path: dict[str, set[str]] = {}
    for f in findings:
        assert f["line"] >= 0 and f["rule"] and f["message"]
        by_path.setdefault(f["path"], set()).add(f["rule"])
    for case, (_, rules) in BYPASSES.items():
        assert rules <= by_path.get(f"generated/evil/{case}.py", set()), (case, by_path.get(f"generated/evil/{case}.py"))
    for path, rule in PATH_CASES.items():
        assert rule in by_path.get(path, set()), (path, by_path.get(path))
    assert (repo / ".git" / "config").read_text() == config_before and not pwned.exists()
    assert list(outside.iterdir()) == [] and not (repo / "generated" / "evil").exists()
    assert not (tmp_path / "x.py").exists() and not Path("/abs.py").exists()
    # the only thing the git actuator ever committed is the approved benign file
    touched = {ln for ln in _git(repo, "log", "--format=", "--name-only", "HEAD~1..HEAD").splitlines() if ln}
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "2" and touched == {"generated/billing/cache.py"}

    # what MCP's get_improvement returns is the folded execution: it carries the findings and the diff too
    folded = fold_all([ImprovementEvent.model_validate(e) for e in [*evil_evs, *good_evs]])
    assert folded[final["improvement_id"]].validation["findings"] == findings
    assert folded[waiting["improvement_id"]].validation["diff"] == waiting["data"]["validation"]["diff"]

    # the benign answer: the approver saw the full diff and no finding; once approved it is committed
    validation = waiting["data"]["validation"]
    assert validation["ok"] is True and validation["findings"] == []
    assert "+++ b/generated/billing/cache.py" in validation["diff"] and "+def ttl(seconds: int)" in validation["diff"]
    assert any(e["status"] == "monitoring" for e in deployed), [(e["status"], e["reason"]) for e in deployed]
    assert (repo / "generated" / "billing" / "cache.py").read_text() == BENIGN
    assert "Kaizen-Improvement: " + waiting["improvement_id"] in _git(repo, "log", "-1", "--format=%B")
