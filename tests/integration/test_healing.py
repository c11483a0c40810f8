"""Self-healing through the real broker: Retries ≥ 3 → high_retry_rate → a focused improvement, linked and cooled down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastmcp import Client

from mcp_server.auth import Principal, TokenStore
from mcp_server.testing import running_server
from streams import topics as T
from streams.settings import Settings
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen

ROOT = Path(__file__).resolve().parents[2]
ADMIN = f"admin-token-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """The worker starts new consumer groups that read topics from the beginning: a broker of the module's own."""
    return own_backend


def _point(tenant: str, component: str, name: str, value: float, ts: float, unit: str = "Count") -> dict[str, Any]:
    return {"metric_name": name, "value": value, "unit": unit, "timestamp": ts, "tenant_id": tenant,
            "namespace": "Test/Healing", "dimensions": {"service": component}}


async def _live_latency(backend: Backend, tenant: str, comp: str, stop: asyncio.Event) -> None:
    """The service's live latency stream, a point every 0.2 s, while the test runs."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await producer.start()
    try:
        while not stop.is_set():
            await producer.send_and_wait(T.RAW_TOPICS["metric"], envelope([_point(
                tenant, comp, "Latency", 100.0, time.time(), "Milliseconds")]), key=tenant.encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await producer.stop()


def _healing(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, r in pairs if t == T.HEALING]


def _improvement_events(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, r in pairs if t == T.IMPROVEMENT_EVENTS]


async def test_retries_fire_a_focused_improvement_linked_to_the_firing_once_per_cooldown(
        backend: Backend, tmp_path: Path) -> None:
    tenant, comp = f"t-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:6]}"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-heal-{uuid.uuid4().hex[:6]}", "KAIZEN_DATA_DIR": str(tmp_path / "w"),
           "KAIZEN_ACTUATOR": "ssm", "KAIZEN_COMMAND_MAX_AGE_SECONDS": "120"}
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    worker = start_kaizen(["worker"], env, "healing-worker")
    stop = asyncio.Event()
    live = asyncio.create_task(_live_latency(backend, tenant, comp, stop))
    try:
        now = time.time()
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                      [envelope([_point(tenant, comp, "Retries", 4.0, now)])], key=tenant.encode())

        def linked(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
            kinds = {r["kind"] for r in _healing(pairs)}
            statuses = {r["status"] for r in _improvement_events(pairs)}
            return {"trigger", "action", "effect"} <= kinds and bool(statuses & {"awaiting_approval", "deploying",
                                                                              "monitoring", "failed"})

        pairs = await collect(backend.kafka_bootstrap, [T.HEALING, T.IMPROVEMENT_EVENTS], linked, timeout=90,
                              keep=mine)
        hist = _healing(pairs)
        firing = [r for r in hist if r["kind"] == "trigger"]
        assert [(r["name"], r["component"]) for r in firing] == [("high_retry_rate", comp)], hist
        fid = firing[0]["firing_id"]
        assert [r["name"] for r in hist if r["kind"] == "action"] == ["resolve_retry_failures"]
        effect = next(r for r in hist if r["kind"] == "effect")
        assert effect["firing_id"] == fid and effect["detail"]["effect"] == "improvement_cycle"
        assert effect["detail"]["role"] == "auditor"
        events = _improvement_events(pairs)
        pending = [e for e in events if e["status"] == "pending"]
        assert len(pending) == 1, events
        imp = pending[0]
        assert imp["data"]["healing"]["firing_id"] == fid and imp["cycle_id"] == effect["detail"]["cycle_id"]
        assert imp["data"]["opportunity"]["affected_components"] == [comp]
        assert imp["data"]["requested_by"] == "healing:auditor"
        decided = [e["status"] for e in events if e["improvement_id"] == imp["improvement_id"]]
        # enable_autonomous_improvements is off by default: the guardrails ask a person
        assert "awaiting_approval" in decided, decided

        # kaizen's own work is recorded as ExecutionMetrics too (tenant "kaizen"): the steps just run
        own = await collect(backend.kafka_bootstrap, [T.EXECUTIONS],
                            lambda ps: any(r["skill_name"] == "improvement.validating" for _, r in ps), timeout=30,
                            keep=lambda _t, r: r.get("tenant_id") == "kaizen")
        assert {"improvement.generating", "improvement.validating"} <= {r["skill_name"] for _, r in own}

        # A second firing inside the cooldown starts nothing. Order: once the worker has the second
        # observation, a slow task of the same component (same healing.observations partition) follows it.
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                      [envelope([_point(tenant, comp, "Retries", 6.0, now + 5)])], key=tenant.encode())
        seen = await collect(backend.kafka_bootstrap, [T.HEALING_OBSERVATIONS],
                             lambda ps: any(r.get("retries") == 6.0 for _, r in ps), timeout=40, keep=mine)
        assert any(r.get("retries") == 6.0 for _, r in seen), "the second retries point was not forwarded"
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                      [envelope([_point(tenant, comp, "Duration", 90_000.0, now + 6, "Milliseconds")])],
                      key=tenant.encode())
        after = await collect(backend.kafka_bootstrap, [T.HEALING, T.IMPROVEMENT_EVENTS],
                              lambda ps: any(r["name"] == "slow_tasks" for r in _healing(ps) if r["kind"] == "trigger"),
                              timeout=60, keep=mine)
        triggers = [r["name"] for r in _healing(after) if r["kind"] == "trigger"]
        # (the live latency stream is the duration baseline: duration_increase may fire with slow_tasks)
        assert triggers.count("high_retry_rate") == 1 and "slow_tasks" in triggers, triggers
        retry_imps = {e["improvement_id"] for e in _improvement_events(after) if e["status"] == "pending"
                      and e["data"].get("healing", {}).get("trigger") == "high_retry_rate"}
        assert retry_imps == {imp["improvement_id"]}

        # A person rejects it: the cycle ends, and its report counts the telemetry that flowed meanwhile.
        cycle_id = effect["detail"]["cycle_id"]
        reject = {"kind": "reject", "command_id": f"cmd-{uuid.uuid4().hex}", "timestamp": datetime.now(UTC).isoformat(),
                  "actor": "bob", "roles": ["approver"], "tenant_id": tenant, "improvement_id": imp["improvement_id"],
                  "reason": "not now"}
        await produce(backend.kafka_bootstrap, T.COMMANDS, [orjson.dumps(reject)], key=tenant.encode())
        reports = await collect(backend.kafka_bootstrap, [T.CYCLE_REPORTS],
                                lambda ps: any(r["cycle_id"] == cycle_id and r.get("end_time") for _, r in ps),
                                timeout=60, keep=lambda _t, r: r.get("cycle_id") == cycle_id)
        final = [r for _, r in reports if r.get("end_time")]
        assert final, f"no final report of {cycle_id}: {reports}"
        assert final[-1]["improvements_attempted"] == 1
        assert final[-1]["telemetry_analyzed"]["metrics"] > 0, final[-1]

        # Visible through MCP: the improvement and its link to the firing.
        settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap})
        async with running_server(settings, TokenStore({ADMIN: Principal("admin", None, frozenset({"admin"}))})) \
                as srv:
            assert await srv.readmodel.wait_for(lambda v: imp["improvement_id"] in v.improvements, 30)
            async with Client(srv.mcp_url, auth=ADMIN) as c:
                got = (await c.call_tool("get_improvement", {"improvement_id": imp["improvement_id"]})
                       ).structured_content
                status = (await c.call_tool("get_system_status", {})).structured_content
        assert got is not None
        assert got["improvement"]["requested_by"] == "healing:auditor"
        assert got["improvement"]["opportunity"]["affected_components"] == [comp]
        assert any(ev["data"].get("healing", {}).get("firing_id") == fid for ev in got["timeline"])
        # offline provider, config-only plans: no code was generated; the workers are the worker processes
        metrics = status["metrics"]
        assert metrics["code_generation_requests"] == 0 and metrics["code_generation_success_rate"] is None
        assert status["workers"] and {w["role"] for w in status["workers"]} == {"worker"}
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await live
        worker.stop()

    # `kaizen healing history` from another directory (no data dir of the worker's) sees the group's history.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli_env = {k: v for k, v in os.environ.items() if k != "KAIZEN_DATA_DIR"}
    out = subprocess.run([sys.executable, "-m", "kaizen.cli", "healing", "history", "--json", "--limit", "5000",
                          "--export", str(elsewhere / "export")],
                         capture_output=True, cwd=elsewhere, timeout=90, check=True,
                         env={**cli_env, "KAFKA_BOOTSTRAP_SERVERS": backend.kafka_bootstrap, "PYTHONPATH": str(ROOT)})
    listed = [r for r in orjson.loads(out.stdout) if r["tenant_id"] == tenant]
    assert {(r["kind"], r["name"]) for r in listed} >= {("trigger", "high_retry_rate"),
                                                        ("action", "resolve_retry_failures"),
                                                        ("effect", "resolve_retry_failures")}
    assert any(r["kind"] == "effect" and r["detail"]["firing_id"] == fid for r in listed)
    assert sorted(p.name.split("-")[0] for p in (elsewhere / "export").glob("*.jsonl")) == [
        "actions", "effects", "triggers"]


async def test_executions_and_the_check_command_go_through_the_owning_worker(backend: Backend, tmp_path: Path) -> None:
    """ExecutionMetrics on telemetry.executions fire like metrics; `kaizen healing check` hands its firing
    observations to the workers and reports what they recorded; a re-run sends nothing again."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-heal2-{uuid.uuid4().hex[:6]}",
           "KAIZEN_DATA_DIR": str(tmp_path / "w"), "KAIZEN_COMMAND_MAX_AGE_SECONDS": "120"}
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    worker = start_kaizen(["worker"], env, "healing-check-worker")
    try:
        now = datetime.now(UTC).isoformat()
        em = {"execution_id": f"x-{uuid.uuid4().hex}", "skill_name": "etl", "tenant_id": tenant, "retries": 5,
              "timestamp_start": now, "timestamp_end": now, "execution_succeeded": True, "total_latency_ms": 900}
        await produce(backend.kafka_bootstrap, T.EXECUTIONS, [orjson.dumps(em)], key=f"{tenant}|etl".encode())
        got = await collect(backend.kafka_bootstrap, [T.HEALING],
                            lambda ps: any(r["kind"] == "effect" for _, r in ps), timeout=60, keep=mine)
        assert {(r["kind"], r["name"], r["component"]) for _, r in got} >= {
            ("trigger", "high_retry_rate", "etl"), ("effect", "resolve_retry_failures", "etl")}

        # a policy effect: cost above $0.50 per task → the LLM cost cap on config.changes, linked to the firing
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                      [envelope([_point(tenant, "billing", "CostUSD", 0.9, time.time(), "None")])],
                      key=tenant.encode())
        policy = await collect(backend.kafka_bootstrap, [T.CONFIG],
                               lambda ps: any(r.get("healing", {}).get("trigger") == "cost_efficiency_degradation"
                                              for _, r in ps), timeout=60,
                               keep=lambda _t, r: isinstance(r.get("healing"), dict))
        cap = [r for _, r in policy if r["healing"]["trigger"] == "cost_efficiency_degradation"]
        assert cap and cap[-1]["max_cost_usd_per_call"] == 0.5 and cap[-1]["healing"]["role"] == "planner"
        hist = await collect(backend.kafka_bootstrap, [T.HEALING],
                             lambda ps: any(r["kind"] == "effect" and r["component"] == "billing" for _, r in ps),
                             timeout=30, keep=mine)
        assert any(r["firing_id"] == cap[-1]["healing"]["firing_id"] for _, r in hist if r["kind"] == "trigger")

        log = tmp_path / "executions.jsonl"
        start = datetime.now(UTC).timestamp()
        lines = [{"execution_id": f"c{i}", "skill_name": "nightly", "tenant_id": tenant, "retries": 4 if i == 9 else 0,
                  "timestamp_start": start + i, "timestamp_end": start + i, "execution_succeeded": True,
                  "total_latency_ms": 1000} for i in range(10)]
        log.write_bytes(b"".join(orjson.dumps(ln) + b"\n" for ln in lines))
        cli_env = {**{k: v for k, v in os.environ.items() if k != "KAIZEN_DATA_DIR"},
                   "KAFKA_BOOTSTRAP_SERVERS": backend.kafka_bootstrap, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "kaizen.cli", "healing", "check", "--input", str(log), "--json", "--wait", "45"]
        first = orjson.loads(subprocess.run(cmd, capture_output=True, cwd=tmp_path, env=cli_env, timeout=90,
                                            check=True).stdout)
        assert [f["trigger"] for f in first["firings"]] == ["high_retry_rate"]
        assert first["recorded"]["trigger"] == 1 and first["recorded"]["effect"] == 1, first["recorded"]
        assert first["effects"][0]["detail"]["effect"] == "improvement_cycle"
        again = orjson.loads(subprocess.run(cmd, capture_output=True, cwd=tmp_path, env=cli_env, timeout=90,
                                            check=True).stdout)
        assert again["triggers_fired"] == 0, again
        status = orjson.loads(subprocess.run(
            [sys.executable, "-m", "kaizen.cli", "healing", "status", "--health", "--json"], capture_output=True,
            cwd=tmp_path, env=cli_env, timeout=90, check=True).stdout)
        assert status["healthy"] is True and status["history_topic"] == T.HEALING
        assert status["fired_by_trigger"]["high_retry_rate"] >= 2 and status["effects"] >= 3, status
    finally:
        worker.stop()


def _log_events(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                out.append(orjson.loads(line))
    return out


def _cycle_requested(path: Path, tenant: str) -> str | None:
    """The id of the cycle the worker logged as requested for `tenant`, if any yet."""
    return next((e["cycle"] for e in _log_events(path) if e.get("event") == "cycle requested"
                 and e.get("tenant") == tenant), None)


async def test_a_firing_whose_worker_stops_while_its_cycle_waits_is_handled_by_the_next_owner(
        backend: Backend, tmp_path: Path) -> None:
    """A self-healing cycle waits a few seconds for its evidence before choosing (agents/improvement/cycle.py).
    The worker owning the `commands` partition stops in that wait (scale-in, a restart): the command was read
    but not handled, so it is not acknowledged, and the worker taking the partition over starts the cycle —
    whether the firing leads to an improvement does not depend on which worker owned what when."""
    tenant, comp = f"t-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:6]}"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-heal-{uuid.uuid4().hex[:6]}", "KAIZEN_DATA_DIR": str(tmp_path / "w"),
           "KAIZEN_ACTUATOR": "ssm", "KAIZEN_COMMAND_MAX_AGE_SECONDS": "120", "KAIZEN_BROKER_SESSION_TIMEOUT": "2"}
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    first = start_kaizen(["worker"], env, "healing-handover-w1")
    second = None
    try:
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"],
                      [envelope([_point(tenant, comp, "Retries", 4.0, time.time())])], key=tenant.encode())
        assert first.log_path is not None
        deadline = time.monotonic() + 90
        while (cycle := _cycle_requested(first.log_path, tenant)) is None:
            assert time.monotonic() < deadline, "the firing's cycle never reached the first worker"
            await asyncio.sleep(0.1)
        first.stop()  # in the cycle's settle wait (5 s after the firing's fresh opportunity)
        # (other tenants' cycles, left on the shared broker by other tests, may start meanwhile: they run beside)
        assert not any(e.get("event") == "cycle started" and e.get("cycle") == cycle
                       for e in _log_events(first.log_path)), \
            "the first worker started the cycle before it stopped: nothing was handed over"
        second = start_kaizen(["worker"], env, "healing-handover-w2")
        pairs = await collect(backend.kafka_bootstrap, [T.IMPROVEMENT_EVENTS],
                              lambda ps: any(r["status"] == "pending" for _, r in ps), timeout=90, keep=mine)
        pending = [r for _, r in pairs if r["status"] == "pending"]
        assert len(pending) == 1, pending
        assert pending[0]["data"]["healing"]["trigger"] == "high_retry_rate"
        assert pending[0]["data"]["opportunity"]["affected_components"] == [comp]
    finally:
        first.stop()
        if second is not None:
            second.stop()
