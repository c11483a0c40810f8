"""The MCP server over real HTTP against the real broker: tools, errors, auth, tenants, approval, commands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastmcp import Client
from fastmcp.exceptions import ToolError

from mcp_server.auth import Principal, TokenStore
from mcp_server.testing import RunningServer, running_server
from streams import topics as t
from streams.records import (
    CycleReport,
    ImprovementEvent,
    ImprovementExecution,
    ImprovementOpportunity,
    StatusReport,
    TelemetryInsight,
)
from streams.settings import Settings

RUN = uuid.uuid4().hex[:6]
TA, TB = f"tenant-a-{RUN}", f"tenant-b-{RUN}"
ADMIN, ALICE, BOB, CAROL, READER = (f"{n}-token-{RUN}-0123456789" for n in ("admin", "alice", "bob", "carol", "rdr"))
TOKENS = {
    ADMIN: Principal("admin", None, frozenset({"admin"})),
    ALICE: Principal("alice", frozenset({TA}), frozenset({"operator"})),
    BOB: Principal("bob", frozenset({TA}), frozenset({"approver"})),
    CAROL: Principal("carol", frozenset({TB}), frozenset({"approver"})),
    READER: Principal("reader-a", frozenset({TA}), frozenset({"reader"})),
}
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """This module asserts on whole state topics: it gets a broker of its own (see tests/conftest.py)."""
    return own_backend


def opp(oid: str, tenant: str, severity: str, score: float, priority: str, **kw: Any) -> ImprovementOpportunity:
    return ImprovementOpportunity.model_validate(dict(
        opportunity_id=oid, title=f"{oid} title", description=f"{oid} description", impact_score=score,
        priority=priority, severity=severity, tenant_id=tenant, problem_type="latency",
        affected_components=["checkout"], first_seen=NOW - timedelta(hours=2), last_seen=NOW, **kw))


def timeline(iid: str, tenant: str, statuses: list[tuple[str, dict[str, Any]]], cycle: str = "") -> list[ImprovementEvent]:
    return [ImprovementEvent(event_id=f"{iid}-e{i}", improvement_id=iid, status=s, tenant_id=tenant,  # type: ignore[arg-type]
                             timestamp=NOW - timedelta(minutes=30 - i * 4), cycle_id=cycle or None, data=d,
                             reason=d.get("reason", ""))
            for i, (s, d) in enumerate(statuses)]


def demo_state() -> list[tuple[str, str, bytes]]:
    """(topic, key, value) of a small but complete state: two tenants, ranked opportunities, a rollback."""
    out: list[tuple[str, str, bytes]] = []
    opps = [opp(f"opp-a-med-{RUN}", TA, "medium", 150.0, "medium"),
            opp(f"opp-a-high-{RUN}", TA, "high", 4000.0, "high"),
            opp(f"opp-a-crit-{RUN}", TA, "critical", 900.0, "high"),
            opp(f"opp-b-{RUN}", TB, "high", 9000.0, "critical"),
            opp(f"opp-sys-{RUN}", TA, "high", 2000.0, "high", scope="system", requires_approval=True)]
    out += [(t.OPPORTUNITIES, o.opportunity_id, o.to_bytes()) for o in opps]
    rolled = timeline(f"imp-a-rb-{RUN}", TA, [
        ("pending", {}), ("generating", {}), ("validating", {}), ("deploying", {"stage": "canary", "fraction": 0.1}),
        ("monitoring", {"stage": "canary"}),
        ("rolled_back", {"verdict": "degraded", "degradation": 0.23, "reason": "p95 latency +23%"})], "cycle-old")
    execs = [
        ImprovementExecution(improvement_id=f"imp-a-wait-{RUN}", opportunity=opps[1], status="awaiting_approval",
                             tenant_id=TA, requested_by="alice", created_at=NOW),
        ImprovementExecution(improvement_id=f"imp-a-own-{RUN}", opportunity=opps[0], status="awaiting_approval",
                             tenant_id=TA, requested_by="bob", created_at=NOW),
        ImprovementExecution(improvement_id=f"imp-b-wait-{RUN}", opportunity=opps[3], status="awaiting_approval",
                             tenant_id=TB, requested_by="kaizen", created_at=NOW),
        ImprovementExecution(improvement_id=f"imp-sys-{RUN}", opportunity=opps[4], status="awaiting_approval",
                             tenant_id=TA, requested_by="kaizen", created_at=NOW),
        ImprovementExecution(improvement_id=f"imp-a-rb-{RUN}", opportunity=opps[2], status="rolled_back",
                             tenant_id=TA, verdict="degraded", degradation=0.23, rollback_triggered=True,
                             deployment={"stage": "canary", "fraction": 0.1}, history=rolled, cycle_id="cycle-old"),
    ]
    out += [(t.IMPROVEMENT_STATE, e.improvement_id, e.to_bytes()) for e in execs]
    out += [(t.IMPROVEMENT_EVENTS, e.improvement_id, e.to_bytes()) for e in rolled]
    for tenant, metric in ((TA, "Latency"), (TB, "ErrorRate")):
        ins = TelemetryInsight(insight_type="anomaly", severity="high", affected_component="checkout",
                               affected_tenants=[tenant], description=f"{metric} anomaly", confidence_score=0.9,
                               timestamp=NOW - timedelta(minutes=10), tenant_id=tenant, metric_name=metric,
                               recommended_action="raise cache TTL")
        out.append((t.INSIGHTS, ins.insight_id, ins.to_bytes()))
    for pid, role, detail in ((f"worker-{RUN}", "worker", {"telemetry_events_processed": 1234}),
                              (f"cw-{RUN}", "connector", {"cloudwatch_api_calls": 42, "circuit_breaker_opens": 1,
                                                          "breakers": {"metrics": {"state": "closed"}}})):
        out.append((t.STATUS, pid, StatusReport(process_id=pid, role=role, timestamp=datetime.now(UTC),  # type: ignore[arg-type]
                                                detail=detail).to_bytes()))
    rep = CycleReport(cycle_id="cycle-old", kind="scheduled", start_time=NOW - timedelta(hours=1), end_time=NOW,
                      tenant_id=TA, improvements_attempted=1, improvements_rolled_back=1)
    out.append((t.CYCLE_REPORTS, rep.cycle_id, rep.to_bytes()))
    for tenant, metric in ((TA, "Latency"), (TB, "ErrorRate")):
        key = f"{tenant}|MeetMind|{metric}|Average|"
        pts = [[(NOW - timedelta(minutes=60 - i)).timestamp(), 100 + (i % 7) * 3 + (80 if i == 45 else 0),
                0.95 if i == 45 else 0.05 + (i % 5) * 0.02] for i in range(60)]
        out.append((t.SERIES, key, orjson.dumps({"series": key, "tenant_id": tenant, "metric_name": metric,
                                                 "component": "checkout", "points": pts})))
        pid = f"pat-{tenant}"
        out.append((t.PATTERNS, pid, orjson.dumps({
            "pattern_id": pid, "template": "Timeout calling <*> after <*> ms", "tenant_id": tenant,
            "log_group": "/aws/lambda/happyos-checkout", "category": "timeout", "count_window": 37,
            "first_seen": NOW.isoformat(), "last_seen": NOW.isoformat(), "sample": "Timeout calling db after 3000 ms"})))
    return out


async def produce(bootstrap: str, items: list[tuple[str, str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, value in items:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()  # refresh the metadata
    return consumer.partitions_for_topic(topic) or set()


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of a topic (all partitions), read until a poll comes back empty."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        out: list[dict[str, Any]] = []
        while batch := await consumer.getmany(timeout_ms=700):
            out += [orjson.loads(m.value) for msgs in batch.values() for m in msgs if m.value]
        return out
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
async def server(backend: Any) -> AsyncIterator[RunningServer]:
    settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap,
                                        "max_concurrent_improvements": 3})
    # the read model creates the topics; seed before starting so the initial load sees it all
    async with running_server(settings, TokenStore(TOKENS), cycle_wait_seconds=1.5) as srv:
        await produce(backend.kafka_bootstrap, demo_state())
        ok = await srv.readmodel.wait_for(lambda v: f"pat-{TB}" in v.patterns and f"imp-a-rb-{RUN}" in v.timelines
                                          and len(v.timelines[f"imp-a-rb-{RUN}"]) == 6, 20)
        assert ok, "the read model did not materialise the seeded state"
        yield srv


async def call(srv: RunningServer, token: str, tool: str, args: dict[str, Any] | None = None) -> Any:
    async with Client(srv.mcp_url, auth=token) as c:
        res = await c.call_tool(tool, args or {})
        return res.structured_content


async def test_lists_all_tools_and_resources(server: RunningServer) -> None:
    async with Client(server.mcp_url, auth=ADMIN) as c:
        names = {tool.name for tool in await c.list_tools()}
        resources = {str(r.uri) for r in await c.list_resources()}
        templates = {r.uri_template for r in await c.list_resource_templates()}
    assert names == {"trigger_improvement_cycle", "generate_component", "get_system_status",
                     "query_telemetry_insights", "list_opportunities", "get_improvement", "list_improvements",
                     "approve_improvement", "reject_improvement", "defer_improvement",
                     "resolve_conflict"}
    assert {"kaizen://opportunities", "kaizen://status", "kaizen://improvements"} <= resources
    assert "kaizen://improvements/{improvement_id}" in templates


async def test_health_and_metrics_need_no_token(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as h:
        assert (await h.get("/health")).json() == {"status": "healthy", "agent": "self-building"}
        text = (await h.get("/metrics")).text
    assert "self_building_improvements_rolled_back" in text and "kaizen_mcp_tool_calls" in text


async def test_no_or_wrong_token_is_401(server: RunningServer) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url) as h:
        assert (await h.post("/mcp", json=body, headers=headers)).status_code == 401
        wrong = {**headers, "authorization": "Bearer not-a-token-at-all-000"}
        assert (await h.post("/mcp", json=body, headers=wrong)).status_code == 401
        assert (await h.get("/api/state")).status_code == 401
        assert (await h.get("/api/state", params={"token": "nope"})).status_code == 401
        assert (await h.get("/api/state", params={"token": READER})).status_code == 200
    with pytest.raises(Exception):  # noqa: B017 - the client surfaces the 401 as a generic error
        async with Client(server.mcp_url, auth="wrong-token-xxxxxxxxxxxx") as c:
            await c.list_tools()


async def test_opportunities_ranked_and_tenant_filtered(server: RunningServer) -> None:
    res = await call(server, ADMIN, "list_opportunities", {"tenant_id": TA})
    ids = [o["opportunity_id"] for o in res["opportunities"]]
    assert ids == [f"opp-a-crit-{RUN}", f"opp-a-high-{RUN}", f"opp-sys-{RUN}", f"opp-a-med-{RUN}"]
    alice = await call(server, ALICE, "list_opportunities")
    assert {o["tenant_id"] for o in alice["opportunities"]} == {TA}
    high = await call(server, ALICE, "list_opportunities", {"min_priority": "high"})
    assert f"opp-a-med-{RUN}" not in [o["opportunity_id"] for o in high["opportunities"]]


async def test_tenant_scoped_token_cannot_see_or_touch_other_tenant(server: RunningServer) -> None:
    with pytest.raises(ToolError, match="not accessible"):
        await call(server, ALICE, "list_opportunities", {"tenant_id": TB})
    with pytest.raises(ToolError, match="not found"):
        await call(server, BOB, "get_improvement", {"improvement_id": f"imp-b-wait-{RUN}"})
    with pytest.raises(ToolError, match="not found"):
        await call(server, BOB, "approve_improvement", {"improvement_id": f"imp-b-wait-{RUN}"})
    imps = await call(server, BOB, "list_improvements")
    assert f"imp-b-wait-{RUN}" not in {i["improvement_id"] for i in imps["improvements"]}
    ins = await call(server, CAROL, "query_telemetry_insights", {"time_range_hours": 2})
    assert ins["count"] >= 1 and {i["tenant_id"] for i in ins["insights"]} == {TB}
    async with httpx.AsyncClient(base_url=server.url) as h:
        state = (await h.get("/api/state", headers={"authorization": f"Bearer {CAROL}"})).json()
    assert {s["tenant_id"] for s in state["series"]} == {TB}
    assert all(o["tenant_id"] == TB for o in state["opportunities"])


async def test_bad_arguments_say_what_to_fix(server: RunningServer) -> None:
    with pytest.raises(ToolError, match="time_range_hours must be between 1 and 720"):
        await call(server, ADMIN, "query_telemetry_insights", {"time_range_hours": 721})
    with pytest.raises(ToolError, match="max_improvements must be between 1 and 3"):
        await call(server, ADMIN, "trigger_improvement_cycle", {"max_improvements": 9, "tenant_id": TA})
    with pytest.raises(ToolError, match="unknown tenant 'nobody"):
        await call(server, ADMIN, "list_improvements", {"tenant_id": f"nobody-{RUN}"})
    with pytest.raises(ToolError, match="component_type must be one of"):
        await call(server, ADMIN, "generate_component", {"component_type": "robot", "requirements": {"a": 1}})
    with pytest.raises(ToolError, match="reject needs a reason"):
        await call(server, BOB, "reject_improvement", {"improvement_id": f"imp-a-wait-{RUN}", "reason": " "})
    with pytest.raises(ToolError, match="cannot approve .* status 'rolled_back'"):
        await call(server, BOB, "approve_improvement", {"improvement_id": f"imp-a-rb-{RUN}"})


async def test_approval_rules_and_command(server: RunningServer, backend: Any) -> None:
    with pytest.raises(ToolError, match="needs role approver"):  # alice is an operator
        await call(server, ALICE, "approve_improvement", {"improvement_id": f"imp-a-wait-{RUN}"})
    with pytest.raises(ToolError, match="four eyes"):  # bob requested imp-a-own
        await call(server, BOB, "approve_improvement", {"improvement_id": f"imp-a-own-{RUN}"})
    with pytest.raises(ToolError, match="system-wide"):  # tenant-scoped approver, system change
        await call(server, BOB, "approve_improvement", {"improvement_id": f"imp-sys-{RUN}"})
    res = await call(server, BOB, "approve_improvement", {"improvement_id": f"imp-a-wait-{RUN}", "reason": "ok"})
    assert res["decision"] == "approve" and res["actor"] == "bob"
    deferred = await call(server, ALICE, "defer_improvement", {"improvement_id": f"imp-a-own-{RUN}"})
    cmds = {c["command_id"]: c for c in await read_topic(backend.kafka_bootstrap, t.COMMANDS)}
    cmd = cmds[res["command_id"]]
    assert (cmd["kind"], cmd["improvement_id"], cmd["actor"], cmd["tenant_id"]) == (
        "approve", f"imp-a-wait-{RUN}", "bob", TA)
    assert cmds[deferred["command_id"]]["kind"] == "defer"
    audit = await read_topic(backend.kafka_bootstrap, t.AUDIT)
    assert any(a["action"] == "improvement.approve" and a["actor"] == "bob" for a in audit)
    assert any(a["action"] == "mcp.approve_improvement" and a["actor"] == "alice"
               and a["detail"]["outcome"] == "error" for a in audit)


async def test_trigger_cycle_publishes_command_and_returns_first_events(server: RunningServer, backend: Any) -> None:
    accepted = await call(server, ALICE, "trigger_improvement_cycle", {"analysis_window_hours": 6})
    assert accepted["status"] == "accepted" and accepted["tenant_id"] == TA  # no worker answered
    cmds = {c["command_id"]: c for c in await read_topic(backend.kafka_bootstrap, t.COMMANDS)}
    cmd = cmds[accepted["command_id"]]
    assert cmd["kind"] == "trigger_cycle" and cmd["actor"] == "alice"
    assert {k: cmd[k] for k in ("analysis_window_hours", "max_improvements", "cycle_id", "cycle_kind")} == {
        "analysis_window_hours": 6, "max_improvements": 3, "cycle_id": accepted["cycle_id"], "cycle_kind": "manual"}
    assert "args" not in cmd  # the typed, flat wire form (streams/commands.py)
    with pytest.raises(ToolError, match="needs role operator"):  # a reader cannot start cycles
        await call(server, READER, "trigger_improvement_cycle", {"tenant_id": TA})

    listening = asyncio.Event()

    async def fake_worker() -> None:  # answers the next trigger_cycle command like a worker would
        consumer = AIOKafkaConsumer(bootstrap_servers=backend.kafka_bootstrap, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(t.COMMANDS, p) for p in sorted(consumer.partitions_for_topic(t.COMMANDS) or
                                                                  await _partitions(consumer, t.COMMANDS))]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)  # the end offsets are fixed now: the next command is seen
            listening.set()
            async for m in consumer:
                c = orjson.loads(m.value)
                if c["kind"] == "trigger_cycle" and c["actor"] == "admin":
                    ev = ImprovementEvent(event_id=f"{c['command_id']}-1", improvement_id=f"imp-new-{RUN}",
                                          status="pending", timestamp=datetime.now(UTC), tenant_id=TA,
                                          cycle_id=c["cycle_id"])
                    await produce(backend.kafka_bootstrap, [(t.IMPROVEMENT_EVENTS, ev.improvement_id, ev.to_bytes())])
                    return
        finally:
            await consumer.stop()

    worker = asyncio.create_task(fake_worker())
    await asyncio.wait_for(listening.wait(), 60)  # no fixed sleep: the fake worker says when it listens
    server.service.cycle_wait_seconds = 10.0
    try:
        started = await call(server, ADMIN, "trigger_improvement_cycle", {"tenant_id": TA, "max_improvements": 1})
    finally:
        server.service.cycle_wait_seconds = 1.5
    await asyncio.wait_for(worker, 60)
    assert started["status"] == "started"
    assert [e["improvement_id"] for e in started["events"]] == [f"imp-new-{RUN}"]


async def test_status_and_generate_component(server: RunningServer) -> None:
    st = await call(server, ADMIN, "get_system_status")
    assert st["broker"]["reachable"] and st["broker"]["loaded"]
    assert any(c["process_id"] == f"cw-{RUN}" and c["breakers"] == {"metrics": "closed"} for c in st["connectors"])
    m = st["metrics"]
    assert m["improvements_rolled_back"] >= 1 and m["improvements_deployed"] >= 1
    assert m["telemetry_events_processed"] >= 1234 and m["cloudwatch_api_calls"] >= 42
    assert m["insights_generated"] >= 2 and m["improvement_cycles_completed"] >= 1
    assert st["evolution_level"] >= 1
    assert all(a["tenant_id"] == TA for a in (await call(server, ALICE, "get_system_status"))["active_improvements"])
    gen = await call(server, ALICE, "generate_component", {"component_type": "skill",
                                                           "requirements": {"goal": "cache warmup"}})
    assert gen["status"] == "accepted" and gen["requested_by"] == "alice" and gen["tenant_id"] == TA
    detail = await call(server, READER, "get_improvement", {"improvement_id": f"imp-a-rb-{RUN}"})
    assert [e["status"] for e in detail["timeline"]][-1] == "rolled_back"
    async with Client(server.mcp_url, auth=READER) as c:
        res = await c.read_resource(f"kaizen://improvements/imp-a-rb-{RUN}")
    assert orjson.loads(res[0].text)["improvement"]["verdict"] == "degraded"  # type: ignore[union-attr]
