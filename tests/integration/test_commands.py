"""The commands topic through the real broker and a worker: bad commands dead-lettered, decisions applied."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics as T
from streams.commands import Decision, TriggerCycle
from streams.records import TelemetryInsight
from tests.conftest import Backend
from tests.kafka_utils import collect, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """The worker reads improvements.events from the beginning: other modules' improvements stay out."""
    return own_backend


async def _send(backend: Backend, key: str, value: bytes) -> None:
    p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await p.start()
    try:
        await p.send_and_wait(T.COMMANDS, value, key=key.encode())
    finally:
        await p.stop()


def _base(marker: str) -> dict[str, Any]:
    return {"command_id": f"cmd-{marker}-{uuid.uuid4().hex[:6]}", "timestamp": datetime.now(UTC).isoformat(),
            "actor": f"tester-{marker}", "roles": ["admin"]}


async def _events(backend: Backend, tenant: str, status: str, timeout: float = 45.0) -> list[dict[str, Any]]:
    pairs = await collect(backend.kafka_bootstrap, [T.IMPROVEMENT_EVENTS],
                          lambda ps: any(r["status"] == status for _, r in ps), timeout=timeout,
                          keep=lambda _t, r: r.get("tenant_id") == tenant)
    return [r for _, r in pairs]


async def test_unknown_and_malformed_commands_are_dead_lettered_and_an_operators_defer_applies(
        backend: Backend, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    tenant, component = f"cmd-{marker}", "api"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-cmd-{marker}", "KAIZEN_DATA_DIR": str(tmp_path),
           "KAIZEN_ACTUATOR": "ssm", "KAIZEN_COMMAND_MAX_AGE_SECONDS": "60"}
    worker = start_kaizen(["worker"], env, "commands-worker")
    try:
        bad = [
            orjson.dumps({**_base(marker), "kind": "launch_missiles"}),
            f'{{"kind": "approve", "note": "{marker}", '.encode(),  # cut off: not JSON
            orjson.dumps({**_base(marker), "kind": "approve"}),  # no improvement_id
            orjson.dumps({**_base(marker), "kind": "trigger_cycle", "analysis_window_hours": -1}),
        ]
        for value in bad:
            await _send(backend, tenant, value)
        pairs = await collect(backend.kafka_bootstrap, [T.DEADLETTER],
                              lambda ps: len(ps) >= len(bad), timeout=60,
                              keep=lambda _t, r: r.get("source_topic") == T.COMMANDS and marker in r["original"])
        reasons = sorted(r["reason"] for _, r in pairs)
        assert reasons == sorted(["unknown command kind 'launch_missiles'", "command is not a JSON object",
                                  "malformed command", "malformed command"]), reasons
        detail = {r["reason"]: r for _, r in pairs}
        assert "known kinds: trigger_cycle" in detail["unknown command kind 'launch_missiles'"]["error"]
        assert all(r["offset"] >= 0 for _, r in pairs)

        # an improvement waiting for approval: insight -> opportunity -> cycle (offline playbook)
        ins = TelemetryInsight(insight_type="performance_degradation", severity="high", affected_component=component,
                               affected_tenants=[tenant], tenant_id=tenant, source="trends", metric_name="Latency",
                               problem_type="latency", confidence_score=0.9, timestamp=datetime.now(UTC),
                               metrics={"baseline": 100.0, "current": 200.0, "change_pct": 100.0},
                               description=f"latency of {component} doubled")
        p = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
        await p.start()
        try:
            await p.send_and_wait(T.INSIGHTS, ins.to_bytes(), key=ins.insight_id.encode())
        finally:
            await p.stop()
        await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=40,
                      keep=lambda _t, r: r.get("tenant_id") == tenant)
        trigger = TriggerCycle(command_id=f"cmd-{marker}-cycle", timestamp=datetime.now(UTC), actor="alice",
                               roles=["operator"], tenant_id=tenant, analysis_window_hours=1, max_improvements=1)
        await _send(backend, tenant, trigger.to_bytes())
        evs = await _events(backend, tenant, "awaiting_approval")
        imp = next(e["improvement_id"] for e in evs if e["status"] == "awaiting_approval")

        # an operator may defer (MCP says so, and now the worker agrees); the requester may not approve
        def decision(kind: str, actor: str, roles: list[str]) -> bytes:
            return Decision(command_id=f"cmd-{marker}-{kind}-{actor}", kind=kind, timestamp=datetime.now(UTC),  # type: ignore[arg-type]
                            actor=actor, roles=roles, tenant_id=tenant, improvement_id=imp,
                            reason=f"{kind} by {actor}").to_bytes()

        await _send(backend, imp, decision("defer", "olga", ["operator"]))
        evs = await _events(backend, tenant, "deferred")
        deferred = next(e for e in evs if e["status"] == "deferred")
        assert deferred["actor"] == "olga"
        await _send(backend, imp, decision("approve", "alice", ["approver"]))  # alice requested it: four eyes
        await _send(backend, imp, decision("approve", "bob", ["approver"]))
        evs = await _events(backend, tenant, "deploying")
    finally:
        worker.stop()
    statuses = [e["status"] for e in sorted(evs, key=lambda e: e["timestamp"])]
    assert statuses.index("deferred") < statuses.index("deploying")
    deploying = next(e for e in evs if e["status"] == "deploying")
    assert deploying["actor"] == "bob" and deploying["data"]["approval"] == {"status": "approved", "by": "bob"}
    audit = await collect(backend.kafka_bootstrap, [T.AUDIT],
                          lambda ps: any(r["actor"] == "alice" and r["action"] == "improvement_approve"
                                         for _, r in ps), timeout=20,
                          keep=lambda _t, r: r.get("target") == imp)
    refused = [r for _, r in audit if r["actor"] == "alice" and r["action"] == "improvement_approve"]
    assert refused and refused[0]["detail"]["allowed"] is False and "four eyes" in refused[0]["detail"]["refusal"]
