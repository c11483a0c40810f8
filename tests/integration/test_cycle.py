"""The improvement cycle through the real broker and moto's SSM: keep, roll back, approval, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics as T
from streams.commands import parse_command
from streams.records import TelemetryInsight
from tests.conftest import Backend
from tests.kafka_utils import collect, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend


def _ssm(backend: Backend) -> Any:
    return boto3.client("ssm", endpoint_url=backend.aws_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _get(ssm: Any, name: str) -> str | None:
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ssm.exceptions.ParameterNotFound:
        return None


class MiniService:
    """A tiny service reporting wall-clock metrics straight to the raw topic; its latency depends on
    its SSM parameters: `good` gets faster with a bigger cache, `bad` slower with more concurrency."""

    def __init__(self, backend: Backend, tenant: str, component: str, kind: str) -> None:
        self.backend, self.tenant, self.component, self.kind = backend, tenant, component, kind
        self.ssm = _ssm(backend)

    def _latency(self, prefix: str) -> float:
        if self.kind == "good":
            cache = float(_get(self.ssm, f"{prefix}/cache_size") or 1024)
            return 120.0 if cache >= 2048 else 200.0
        conc = float(_get(self.ssm, f"{prefix}/concurrency") or 8)
        return 150.0 if conc > 8 else 100.0

    async def run(self, stop: asyncio.Event) -> None:
        base = f"/kaizen/{self.tenant}/{self.component}"
        producer = AIOKafkaProducer(bootstrap_servers=self.backend.kafka_bootstrap)
        await producer.start()
        try:
            i = 0
            while not stop.is_set():
                lat = await asyncio.to_thread(self._latency, base)
                canary = await asyncio.to_thread(_get, self.ssm, f"{base}/canary/concurrency") is not None or \
                    await asyncio.to_thread(_get, self.ssm, f"{base}/canary/cache_size") is not None
                ts = time.time()
                dims = {"service": self.component}
                recs = [
                    {"metric_name": "Latency", "value": lat + (i % 3), "unit": "Milliseconds", "timestamp": ts,
                     "tenant_id": self.tenant, "namespace": "Test/Cycle", "dimensions": dims},
                    {"metric_name": "ErrorRate", "value": 0.01, "timestamp": ts, "tenant_id": self.tenant,
                     "namespace": "Test/Cycle", "dimensions": dims},
                    {"metric_name": "RequestCount", "value": 1000.0, "timestamp": ts, "tenant_id": self.tenant,
                     "namespace": "Test/Cycle", "dimensions": dims},
                ]
                if canary:
                    clat = await asyncio.to_thread(self._latency, f"{base}/canary")
                    recs.append({"metric_name": "Latency", "value": clat, "unit": "Milliseconds", "timestamp": ts,
                                 "tenant_id": self.tenant, "namespace": "Test/Cycle",
                                 "dimensions": {**dims, "variant": "canary"}})
                await producer.send_and_wait(T.RAW_TOPICS["metric"], orjson.dumps({"records": recs}),
                                             key=self.tenant.encode())
                i += 1
                await asyncio.sleep(0.25)
        finally:
            await producer.stop()


def _insight(tenant: str, component: str) -> TelemetryInsight:
    return TelemetryInsight(insight_type="performance_degradation", severity="high", affected_component=component,
                            affected_tenants=[tenant], tenant_id=tenant, source="trends", metric_name="Latency",
                            problem_type="latency", confidence_score=0.9, timestamp=datetime.now(UTC),
                            metrics={"baseline": 100.0, "current": 200.0, "change_pct": 100.0},
                            description=f"latency of {component} doubled")


async def _send(backend: Backend, topic: str, key: str, value: bytes) -> None:
    p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await p.start()
    try:
        await p.send_and_wait(topic, value, key=key.encode())
    finally:
        await p.stop()


def _cmd(kind: str, actor: str, roles: list[str], tenant: str | None = None, improvement_id: str | None = None,
         **args: Any) -> bytes:
    """A command as any producer writes it: flat JSON, checked against the typed union before sending."""
    raw = {"command_id": f"cmd-{uuid.uuid4().hex}", "kind": kind, "timestamp": datetime.now(UTC).isoformat(),
           "actor": actor, "roles": roles, "tenant_id": tenant, "improvement_id": improvement_id, **args}
    return parse_command(orjson.dumps(raw)).to_bytes()


async def _events(backend: Backend, tenant: str, until: Any, timeout: float = 180.0,
                  settle: float = 0.0) -> list[dict[str, Any]]:
    pairs = await collect(backend.kafka_bootstrap, [T.IMPROVEMENT_EVENTS], lambda ps: until([r for _, r in ps]),
                          timeout=timeout, keep=lambda _t, r: r.get("tenant_id") == tenant, settle=settle)
    return [r for _, r in pairs]


def _has(status: str) -> Any:
    return lambda evs: any(e["status"] == status for e in evs)


def _terminal(evs: list[dict[str, Any]]) -> bool:
    return any(e["status"] in ("completed", "rolled_back", "failed", "rejected") for e in evs)


@pytest.fixture
def cycle_env(backend: Backend, tmp_path: Path) -> dict[str, str]:
    return {**backend.env(), "KAIZEN_APP_ID": f"kz-cycle-{uuid.uuid4().hex[:6]}", "KAIZEN_DATA_DIR": str(tmp_path),
            # 15 s: the engine waits up to twice this for late telemetry before calling a verdict
            # inconclusive; on a busy machine (two suites on two cores) 8 s left too little of it
            "MONITORING_DURATION_SECONDS": "15", "MONITORING_CHECK_INTERVAL_SECONDS": "0.5",
            "BASELINE_WINDOW_SECONDS": "20", "KAIZEN_ACTUATOR": "ssm",
            # each test's worker is a new consumer group on the shared commands topic: other tests' (older)
            # commands are skipped instead of replayed
            "KAIZEN_COMMAND_MAX_AGE_SECONDS": "30"}


@pytest.fixture
async def service_factory(backend: Backend) -> AsyncIterator[Any]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(tenant: str, component: str, kind: str) -> None:
        tasks.append(asyncio.create_task(MiniService(backend, tenant, component, kind).run(stop)))

    yield start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _to_approval(backend: Backend, tenant: str, component: str) -> str:
    await _send(backend, T.INSIGHTS, tenant, _insight(tenant, component).to_bytes())
    opps = await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=120,
                         keep=lambda _t, r: r.get("tenant_id") == tenant)
    assert opps, "the insight did not become an opportunity"
    await _send(backend, T.COMMANDS, tenant, _cmd("trigger_cycle", "alice", ["operator"], tenant,
                                                  analysis_window_hours=1, max_improvements=1))
    evs = await _events(backend, tenant, _has("awaiting_approval"))
    waiting = [e for e in evs if e["status"] == "awaiting_approval"]
    assert waiting, f"no improvement reached awaiting_approval: {[e['status'] for e in evs]}"
    return str(waiting[0]["improvement_id"])


async def test_good_change_kept_bad_change_rolled_back(backend: Backend, cycle_env: dict[str, str],
                                                       service_factory: Any) -> None:
    ssm = _ssm(backend)
    good, bad = f"good-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    for tenant in (good, bad):
        ssm.put_parameter(Name=f"/kaizen/{tenant}/api/cache_size", Value="1024", Type="String", Overwrite=True)
        ssm.put_parameter(Name=f"/kaizen/{tenant}/api/concurrency", Value="8", Type="String", Overwrite=True)
    worker = start_kaizen(["worker"], cycle_env, "cycle-worker")
    try:
        service_factory(good, "api", "good")
        service_factory(bad, "api", "bad")
        imp_good = await _to_approval(backend, good, "api")
        imp_bad = await _to_approval(backend, bad, "api")
        # the requester may not approve its own change: wait for the worker's refusal (its audit record),
        # then look for any deployment it would have started
        own = _cmd("approve", "alice", ["approver"], good, imp_good)
        await _send(backend, T.COMMANDS, imp_good, own)
        own_id = orjson.loads(own)["command_id"]
        refusals = await collect(backend.kafka_bootstrap, [T.AUDIT], lambda ps: len(ps) >= 1, timeout=120,
                                 keep=lambda _t, r: (r.get("detail") or {}).get("command_id") == own_id)
        assert refusals and refusals[0][1]["detail"]["allowed"] is False, refusals
        evs = await _events(backend, good, lambda e: True, timeout=2.0, settle=1.0)
        assert not any(e["status"] == "deploying" for e in evs), "the requester approved its own change"
        for imp, tenant in ((imp_good, good), (imp_bad, bad)):
            await _send(backend, T.COMMANDS, imp, _cmd("approve", "bob", ["approver"], tenant, imp, reason="ok"))
        good_evs = await _events(backend, good, _terminal, timeout=180)
        bad_evs = await _events(backend, bad, _terminal, timeout=180)
    finally:
        worker.stop()
    g_final = [e for e in good_evs if e["status"] in ("completed", "rolled_back", "failed")]
    b_final = [e for e in bad_evs if e["status"] in ("completed", "rolled_back", "failed")]
    assert [e["status"] for e in g_final] == ["completed"], g_final
    assert g_final[0]["data"]["verdict"] == "keep"
    # the planner sizes the step by the measured deviation (docs/formulas.md): whatever it planned is what
    # stays in SSM, and it is past the service's 2048 knee
    planned = next(c["new"] for e in good_evs for c in (e["data"].get("plan") or {}).get("changes", [])
                   if c["parameter"] == "cache_size")
    assert float(planned) >= 2048, planned
    assert float(_get(ssm, f"/kaizen/{good}/api/cache_size") or 0) == float(planned)
    assert _get(ssm, f"/kaizen/{good}/api/canary/cache_size") is None, "the canary key is removed after rollout"
    impact = g_final[0]["data"]["impact"]["metrics"]["improvement"]
    assert impact["latency_reduction_pct"] > 20, impact
    assert [e["status"] for e in b_final] == ["rolled_back"], b_final
    assert b_final[0]["data"]["degradation"] > 0.10
    assert _get(ssm, f"/kaizen/{bad}/api/concurrency") == "8", "the previous value is back in SSM"
    stages = [e["data"]["deployment"]["stage"] for e in good_evs if e["status"] == "monitoring"]
    assert stages[:2] == ["canary", "full"], stages
    assert imp_bad != imp_good


async def test_sigkill_during_monitoring_one_deployment_one_verdict(backend: Backend, cycle_env: dict[str, str],
                                                                    service_factory: Any) -> None:
    ssm = _ssm(backend)
    tenant = f"kill-{uuid.uuid4().hex[:6]}"
    ssm.put_parameter(Name=f"/kaizen/{tenant}/api/cache_size", Value="1024", Type="String", Overwrite=True)
    env = {**cycle_env, "MONITORING_DURATION_SECONDS": "12"}
    w1 = start_kaizen(["worker"], env, "kill-worker-1")
    try:
        service_factory(tenant, "api", "good")
        imp = await _to_approval(backend, tenant, "api")
        await _send(backend, T.COMMANDS, imp, _cmd("approve", "bob", ["approver"], tenant, imp))
        await _events(backend, tenant, _has("monitoring"))
        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(10)
    finally:
        w1.stop()
    w2 = start_kaizen(["worker"], env, "kill-worker-2")
    try:
        evs = await _events(backend, tenant, _terminal, timeout=90, settle=3.0)
    finally:
        w2.stop()
    ids = {e["event_id"]: e for e in evs}
    deployments = [e for e in ids.values() if e["status"] == "monitoring" and e["data"].get("deployment", {})
                   .get("stage") == "canary"]
    verdicts = [e for e in ids.values() if e["status"] in ("completed", "rolled_back", "failed")]
    assert len(deployments) == 1, [(e["status"], e["event_id"], e["data"].get("deployment")) for e in evs]
    assert len(verdicts) == 1, verdicts
    history = ssm.get_parameter_history(Name=f"/kaizen/{tenant}/api/canary/cache_size")["Parameters"] \
        if _get(ssm, f"/kaizen/{tenant}/api/canary/cache_size") else []
    assert len(history) <= 1


async def test_a_new_group_reading_the_events_back_reruns_no_old_step(backend: Backend, cycle_env: dict[str, str],
                                                                      service_factory: Any) -> None:
    """A worker of another app id (a new consumer group, empty stores) folds a finished improvement from
    improvements.events: it must not run any of the steps the improvement went through (before, it deployed
    the rolled-back change again until a later event cancelled the step) — no event, no SSM write."""
    ssm = _ssm(backend)
    tenant = f"replay-{uuid.uuid4().hex[:6]}"
    name = f"/kaizen/{tenant}/api/concurrency"
    ssm.put_parameter(Name=name, Value="8", Type="String", Overwrite=True)
    w1 = start_kaizen(["worker"], cycle_env, "replay-worker-1")
    try:
        service_factory(tenant, "api", "bad")
        imp = await _to_approval(backend, tenant, "api")
        await _send(backend, T.COMMANDS, imp, _cmd("approve", "bob", ["approver"], tenant, imp, reason="ok"))
        evs = await _events(backend, tenant, _terminal, timeout=180)
    finally:
        w1.stop()
    assert [e["status"] for e in evs if e["status"] in ("completed", "rolled_back", "failed")] == ["rolled_back"]
    assert _get(ssm, name) == "8"
    mine = [e for e in evs if e["improvement_id"] == imp]
    versions = {n: len(ssm.get_parameter_history(Name=n)["Parameters"]) for n in (name, f"/kaizen/{tenant}/api/cache_size")
                if _get(ssm, n) is not None}

    def folded_by_two(ps: list[tuple[str, dict[str, Any]]]) -> bool:  # the first worker's fold and the new one's
        return sum(1 for _t, r in ps if r.get("improvement_id") == imp and r.get("status") == "rolled_back") >= 2

    # commands of a minute ago are not the new worker's to run (as any new group on an old commands topic)
    w2 = start_kaizen(["worker"], {**cycle_env, "KAIZEN_APP_ID": f"kz-replay-{uuid.uuid4().hex[:6]}",
                                   "KAIZEN_COMMAND_MAX_AGE_SECONDS": "5"}, "replay-worker-2")
    try:
        states = await collect(backend.kafka_bootstrap, [T.IMPROVEMENT_STATE], folded_by_two, timeout=120)
        assert folded_by_two(states), "the new worker did not fold the improvement"
        await asyncio.sleep(8.0)  # what a re-run step would do by now: emit its outcome, write SSM
        after = await _events(backend, tenant, lambda e: True, timeout=3.0, settle=1.0)
    finally:
        w2.stop()
    again = [e for e in after if e["improvement_id"] == imp]
    assert len(again) == len(mine), [(e["status"], e["event_id"]) for e in again[len(mine):]]
    # the new worker's fold re-writes the audit records of the statuses it folds: the same records (same ids,
    # dated when the change happened), so the trail has no second, later-dated copy of any step
    audits = await collect(backend.kafka_bootstrap, [T.AUDIT], lambda ps: False, timeout=4.0,
                           keep=lambda _t, r: r.get("target") == imp)
    folded = [r for _t, r in audits if r["action"] in ("deployment", "rollback_started", "rollback")
              or r["action"] in {f"improvement_{s}" for s in ("awaiting_approval", "completed", "failed", "rejected")}]
    ids: dict[str, set[str]] = {}
    for r in folded:
        ids.setdefault(r["action"], set()).add(r["audit_id"])
    assert len(folded) > len(ids), "the new worker wrote no audit record: the check below proves nothing"
    assert all(len(v) == 1 for v in ids.values()), sorted((r["action"], r["timestamp"]) for r in folded)
    assert {n: len(ssm.get_parameter_history(Name=n)["Parameters"]) for n in versions} == versions
    assert _get(ssm, name) == "8"


class _EvilLLM:
    """An OpenAI-compatible endpoint (real HTTP on a free port) that answers with dangerous code."""

    CODE = ("```python:svc/handler.py\nimport subprocess\n\n\ndef run(cmd: str) -> str:\n"
            "    subprocess.run(cmd, shell=True)\n    return str(eval(cmd))\n```")

    def __enter__(self) -> str:
        import http.server
        import threading

        code = self.CODE

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = orjson.dumps({"id": "x", "model": "evil", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": code}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_llm_code_with_eval_fails_validation_and_system_wide_waits_for_approval(
        backend: Backend, cycle_env: dict[str, str], service_factory: Any) -> None:
    import subprocess
    import sys

    ssm = _ssm(backend)
    code_tenant = f"code-{uuid.uuid4().hex[:6]}"
    sys_a, sys_b = f"sysa-{uuid.uuid4().hex[:6]}", f"sysb-{uuid.uuid4().hex[:6]}"
    ssm.put_parameter(Name=f"/kaizen/{sys_a}/gateway/cache_size", Value="1024", Type="String", Overwrite=True)
    with _EvilLLM() as url:
        env = {**cycle_env, "LLM_PROVIDER": "openai", "LLM_BASE_URL": url, "LLM_API_KEY": "test"}
        worker = start_kaizen(["worker"], env, "llm-worker")
        try:
            service_factory(sys_a, "gateway", "good")
            # 1) an opportunity no playbook fits → the LLM generates code → validation fails with reasons
            ins = _insight(code_tenant, "billing").model_copy(update={"problem_type": "memory_leak",
                                                                      "insight_type": "anomaly",
                                                                      "metric_name": None})
            await _send(backend, T.INSIGHTS, code_tenant, ins.to_bytes())
            await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=40,
                          keep=lambda _t, r: r.get("tenant_id") == code_tenant)
            await _send(backend, T.COMMANDS, code_tenant, _cmd("trigger_cycle", "alice", ["operator"], code_tenant,
                                                               analysis_window_hours=1, max_improvements=1))
            code_evs = await _events(backend, code_tenant, _terminal, timeout=90)
            # 2) a system-wide opportunity (two tenants) waits for approval and proceeds only after it
            sys_ins = _insight(sys_a, "gateway").model_copy(update={"affected_tenants": [sys_a, sys_b]})
            await _send(backend, T.INSIGHTS, sys_a, sys_ins.to_bytes())
            opps = await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=40,
                                 keep=lambda _t, r: r.get("tenant_id") == sys_a)
            assert opps[-1][1]["scope"] == "system" and opps[-1][1]["requires_approval"] is True
            await _send(backend, T.COMMANDS, sys_a, _cmd("trigger_cycle", "alice", ["operator"], sys_a,
                                                         analysis_window_hours=1, max_improvements=1))
            waiting = await _events(backend, sys_a, _has("awaiting_approval"))
            await asyncio.sleep(3.0)
            held = await _events(backend, sys_a, lambda e: True, timeout=2.0, settle=0.5)
            assert not any(e["status"] in ("deploying", "monitoring") for e in held), "proceeded without approval"
            imp = next(e["improvement_id"] for e in waiting if e["status"] == "awaiting_approval")
            await _send(backend, T.COMMANDS, imp, _cmd("approve", "root", ["admin"], sys_a, imp, reason="ok",
                                                         all_tenants=True))
            approved = await _events(backend, sys_a, _has("monitoring"), timeout=40)
        finally:
            worker.stop()
    failed = [e for e in code_evs if e["status"] == "failed"]
    assert failed, [e["status"] for e in code_evs]
    reason = failed[0]["reason"]
    assert "validation failed" in reason and "security" in reason, reason
    assert "eval" in reason or "subprocess" in reason, reason
    reasons = next(e for e in waiting if e["status"] == "awaiting_approval")["reason"]
    assert "system-wide" in reasons, reasons
    assert any(e["status"] == "monitoring" for e in approved)
    # The timeline is plain Kafka: any client reads it. Debian's kcat (librdkafka 2.0.2) fails Tansu 0.6.0's
    # ApiVersions handshake (see README), so a current librdkafka (confluent-kafka) reads it here, as kcat
    # does against a real Kafka; and kaizen's own `kaizen tail` prints it.
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": backend.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(T.IMPROVEMENT_EVENTS, p, 0) for p in range(4)])
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (imp in "".join(seen) and '"status":"monitoring"' in "".join(
            x for x in seen if imp in x)):
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error() and msg.value():
            seen.append(bytes(msg.value() or b"").decode())
    consumer.close()
    mine = [x for x in seen if imp in x]
    assert any('"status":"awaiting_approval"' in x for x in mine) and any('"status":"monitoring"' in x for x in mine)
    out = subprocess.run([sys.executable, "-m", "kaizen.cli", "tail", T.IMPROVEMENT_EVENTS, "--idle-exit", "2"],
                         env={**os.environ, **backend.env()}, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert imp in out and "awaiting_approval" in out
