"""Durable, truthful actuation through Tansu and moto's SSM: rollback across an AWS outage and a worker
SIGKILL, a hand-made change kept as a conflict, guardrails on Percent metrics, plans showing SSM's value.

The worker reaches AWS through a TCP gate in this process (`AwsGate`): closing it makes the endpoint
unreachable (connections refused, open ones cut) while moto keeps its state, as when the network to AWS
is gone; the services in the test keep talking to moto directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics as T
from tests.conftest import Backend
from tests.integration.test_cycle import (
    MiniService,
    _cmd,
    _events,
    _get,
    _has,
    _insight,
    _send,
    _ssm,
    _terminal,
)
from tests.kafka_utils import collect, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of this module's own (its workers read topics from the beginning; see tests/conftest.py)."""
    return own_backend


class AwsGate:
    """A TCP relay to the AWS endpoint that can be closed (connection refused) and opened again."""

    def __init__(self, upstream: str) -> None:
        host_port = upstream.split("//", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.upstream_port = int(port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self.conns):
            w.close()
        self.conns.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            return
        self.conns.update({writer, up_w})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer), return_exceptions=True)
        self.conns.difference_update({writer, up_w})


@pytest.fixture
async def service_factory(backend: Backend) -> AsyncIterator[Any]:
    """Start MiniServices (tests/integration/test_cycle.py) for the test; stopped at its end."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(tenant: str, component: str, kind: str) -> None:
        tasks.append(asyncio.create_task(MiniService(backend, tenant, component, kind).run(stop)))

    yield start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def gate(backend: Backend) -> AsyncIterator[AwsGate]:
    g = AwsGate(backend.aws_endpoint)
    await g.open()
    try:
        yield g
    finally:
        await g.close()


def _env(backend: Backend, gate: AwsGate, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**backend.env(), "AWS_ENDPOINT_URL": gate.url, "KAIZEN_APP_ID": f"kz-rb-{uuid.uuid4().hex[:6]}",
            "KAIZEN_DATA_DIR": str(tmp_path), "MONITORING_DURATION_SECONDS": "20",
            "MONITORING_CHECK_INTERVAL_SECONDS": "0.5", "BASELINE_WINDOW_SECONDS": "20", "KAIZEN_ACTUATOR": "ssm",
            "KAIZEN_COMMAND_MAX_AGE_SECONDS": "30", "KAIZEN_BROKER_SESSION_TIMEOUT": "2",
            "ENABLE_AUTONOMOUS_IMPROVEMENTS": "true", **extra}


async def _start_improvement(backend: Backend, tenant: str, component: str = "api") -> None:
    """An opportunity for the component, then a manual cycle for the tenant."""
    await _send(backend, T.INSIGHTS, tenant, _insight(tenant, component).to_bytes())
    opps = await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES], lambda ps: len(ps) >= 1, timeout=40,
                         keep=lambda _t, r: r.get("tenant_id") == tenant)
    assert opps, "the insight did not become an opportunity"
    # a few seconds of telemetry first: the guardrails and the baseline read the service's recent metrics
    await asyncio.sleep(3.0)
    await _send(backend, T.COMMANDS, tenant, _cmd("trigger_cycle", "alice", ["operator"], tenant,
                                                  analysis_window_hours=1, max_improvements=1))


def _seed(ssm: Any, tenant: str) -> None:
    ssm.put_parameter(Name=f"/kaizen/{tenant}/api/cache_size", Value="1024", Type="String", Overwrite=True)
    ssm.put_parameter(Name=f"/kaizen/{tenant}/api/concurrency", Value="8", Type="String", Overwrite=True)


def _assert_back_to_previous(ssm: Any, tenant: str) -> None:
    base = f"/kaizen/{tenant}/api"
    assert _get(ssm, f"{base}/concurrency") == "8" and _get(ssm, f"{base}/cache_size") == "1024"
    for name in ("cache_size", "cache_ttl_seconds", "pool_size", "concurrency"):
        assert _get(ssm, f"{base}/canary/{name}") is None, f"canary/{name} did not exist before: must be deleted"
        if name in ("cache_ttl_seconds", "pool_size"):
            assert _get(ssm, f"{base}/{name}") is None, f"{name} did not exist before: must be deleted"


def _canary_live(ssm: Any, tenant: str, name: str, before: str) -> str:
    """The canary value kaizen applied (the planner sizes it from the evidence): present and changed."""
    value = _get(ssm, f"/kaizen/{tenant}/api/canary/{name}")
    assert value is not None and value != before, f"canary/{name} is not live: {value!r}"
    return value


def _status_of(evs: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["status"] == status]


async def test_aws_unreachable_during_canary_of_a_degrading_change_still_rolled_back(
        backend: Backend, gate: AwsGate, tmp_path: Path, service_factory: Any) -> None:
    ssm = _ssm(backend)
    tenant = f"out-{uuid.uuid4().hex[:6]}"
    _seed(ssm, tenant)
    worker = start_kaizen(["worker"], _env(backend, gate, tmp_path), "rb-outage-worker")
    try:
        service_factory(tenant, "api", "bad")
        await _start_improvement(backend, tenant)
        evs = await _events(backend, tenant, _has("monitoring"), timeout=60)
        assert _status_of(evs, "monitoring"), [e["status"] for e in evs]
        live = _canary_live(ssm, tenant, "concurrency", before="8")  # the canary is live
        await gate.close()  # AWS gone for 5 s while the degrading canary is watched
        gone = asyncio.get_running_loop().time()
        down = await _events(backend, tenant, _has("rolling_back"), timeout=4.5)
        await asyncio.sleep(max(0.0, 5.0 - (asyncio.get_running_loop().time() - gone)))
        assert _get(ssm, f"/kaizen/{tenant}/api/canary/concurrency") == live, "nothing could be undone while down"
        await gate.open()
        evs = await _events(backend, tenant, _terminal, timeout=60)
    finally:
        worker.stop()
    assert _status_of(down, "rolling_back"), "the verdict did not come while AWS was unreachable"
    final = [e for e in evs if e["status"] in ("completed", "rolled_back", "failed", "conflict")]
    assert [e["status"] for e in final] == ["rolled_back"], [(e["status"], e["reason"]) for e in final]
    assert final[0]["data"]["rollback"]["retries"] > 0, "the rollback never met the outage"
    _assert_back_to_previous(ssm, tenant)


async def test_worker_sigkilled_mid_rollback_successor_finishes_it(
        backend: Backend, gate: AwsGate, tmp_path: Path, service_factory: Any) -> None:
    ssm = _ssm(backend)
    tenant = f"kil-{uuid.uuid4().hex[:6]}"
    _seed(ssm, tenant)
    env = _env(backend, gate, tmp_path)
    w1 = start_kaizen(["worker"], env, "rb-kill-w1")
    try:
        service_factory(tenant, "api", "bad")
        await _start_improvement(backend, tenant)
        await _events(backend, tenant, _has("monitoring"), timeout=60)
        live = _canary_live(ssm, tenant, "concurrency", before="8")
        await gate.close()  # the rollback cannot finish: it is retrying when the worker dies
        evs = await _events(backend, tenant, _has("rolling_back"), timeout=30)
        assert _status_of(evs, "rolling_back")
        await asyncio.sleep(1.0)
        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(10)
    finally:
        w1.stop()
    assert _get(ssm, f"/kaizen/{tenant}/api/canary/concurrency") == live, "the rollback was not in the middle"
    await gate.open()
    w2 = start_kaizen(["worker"], env, "rb-kill-w2")
    try:
        evs = await _events(backend, tenant, _terminal, timeout=60, settle=2.0)
    finally:
        w2.stop()
    final = [e for e in evs if e["status"] in ("completed", "rolled_back", "failed", "conflict")]
    assert [e["status"] for e in final] == ["rolled_back"], [(e["status"], e["reason"]) for e in final]
    _assert_back_to_previous(ssm, tenant)


async def test_parameter_changed_by_hand_during_monitoring_is_a_conflict_and_kept(
        backend: Backend, gate: AwsGate, tmp_path: Path, service_factory: Any) -> None:
    ssm = _ssm(backend)
    tenant = f"hand-{uuid.uuid4().hex[:6]}"
    _seed(ssm, tenant)
    worker = start_kaizen(["worker"], _env(backend, gate, tmp_path), "rb-hand-worker")
    try:
        service_factory(tenant, "api", "good")
        await _start_improvement(backend, tenant)
        await _events(backend, tenant, _has("monitoring"), timeout=60)
        hand = f"/kaizen/{tenant}/api/canary/cache_size"
        ssm.put_parameter(Name=hand, Value="3000", Type="String", Overwrite=True)  # an operator's own value
        evs = await _events(backend, tenant, lambda e: _has("conflict")(e) or _terminal(e), timeout=40)
        audit = await collect(backend.kafka_bootstrap, [T.AUDIT], lambda ps: len(ps) >= 1, timeout=15,
                              keep=lambda _t, r: r.get("tenant_id") == tenant
                              and r.get("action") == "improvement_conflict")
    finally:
        worker.stop()
    conflict = _status_of(evs, "conflict")
    assert conflict, [(e["status"], e["reason"]) for e in evs]
    assert hand in conflict[0]["data"]["conflicts"], conflict[0]["data"]
    assert not [e for e in evs if e["status"] in ("completed", "rolled_back", "failed")]
    assert _get(ssm, hand) == "3000", "the hand-made value was overwritten"
    assert audit, "the conflict was not audited"


class PercentService(MiniService):
    """A healthy service whose ErrorRate is reported the CloudWatch way: Unit Percent (0.2 = 0.2 %)."""

    async def run(self, stop: asyncio.Event) -> None:
        import time

        producer = AIOKafkaProducer(bootstrap_servers=self.backend.kafka_bootstrap)
        await producer.start()
        try:
            while not stop.is_set():
                ts, dims = time.time(), {"service": self.component}
                recs = [{"metric_name": "Latency", "value": 100.0, "unit": "Milliseconds", "timestamp": ts,
                         "tenant_id": self.tenant, "namespace": "Test/Units", "dimensions": dims},
                        {"metric_name": "ErrorRate", "value": 0.2, "unit": "Percent", "timestamp": ts,
                         "tenant_id": self.tenant, "namespace": "Test/Units", "dimensions": dims}]
                await producer.send_and_wait(T.RAW_TOPICS["metric"], orjson.dumps({"records": recs}),
                                             key=self.tenant.encode())
                await asyncio.sleep(0.25)
        finally:
            await producer.stop()


async def test_percent_error_rate_passes_guardrails_and_plan_shows_ssm_values(
        backend: Backend, gate: AwsGate, tmp_path: Path) -> None:
    ssm = _ssm(backend)
    tenant = f"pct-{uuid.uuid4().hex[:6]}"
    ssm.put_parameter(Name=f"/kaizen/{tenant}/api/cache_size", Value="1536", Type="String", Overwrite=True)
    stop = asyncio.Event()
    svc = asyncio.create_task(PercentService(backend, tenant, "api", "good").run(stop))
    worker = start_kaizen(["worker"], _env(backend, gate, tmp_path), "rb-pct-worker")
    try:
        await _start_improvement(backend, tenant)
        evs = await _events(backend, tenant, lambda e: any(x["status"] in ("deploying", "awaiting_approval",
                                                                            "failed") for x in e), timeout=60)
    finally:
        worker.stop()
        stop.set()
        await asyncio.gather(svc, return_exceptions=True)
    decided = [e for e in evs if e["status"] in ("deploying", "awaiting_approval", "failed")]
    assert [e["status"] for e in decided] == ["deploying"], [(e["status"], e["reason"]) for e in decided]
    assert decided[0]["actor"] == "guardrails", decided[0]
    plan = next(e["data"]["plan"] for e in evs if "plan" in e.get("data", {}))
    olds = {c["parameter"]: c["old"] for c in plan["changes"]}
    assert olds["cache_size"] == 1536.0, plan  # what SSM held, not the playbook's 1024
    # every other planned parameter: SSM held nothing, so it is shown as absent
    assert all(old is None for name, old in olds.items() if name != "cache_size"), plan


async def test_broker_restarted_empty_changes_still_applied_are_rolled_back(
        backend: Backend, gate: AwsGate, tmp_path: Path) -> None:
    """The embedded broker keeps its log in memory: restarted, it comes back empty and the improvement's
    events are gone. The applied-changes journal (KAIZEN_DATA_DIR) still knows what was applied: the
    restarted worker rolls it back."""
    from kaizen.embedded import start_tansu
    from tests.kafka_utils import ARTIFACTS

    ssm = _ssm(backend)
    tenant = f"rst-{uuid.uuid4().hex[:6]}"
    _seed(ssm, tenant)
    brokers = [start_tansu(0, ARTIFACTS / "logs" / "rb-reset-broker")]
    port = brokers[0].port
    own = Backend(f"127.0.0.1:{port}", backend.aws_endpoint, backend.kind)
    env = {**_env(own, gate, tmp_path), "MONITORING_DURATION_SECONDS": "120"}  # stays in monitoring
    stop = asyncio.Event()
    svc = asyncio.create_task(MiniService(own, tenant, "api", "good").run(stop))
    w1 = start_kaizen(["worker"], env, "rb-reset-w1")
    w2 = None
    try:
        await _start_improvement(own, tenant)
        await _events(own, tenant, _has("monitoring"), timeout=60)
        _canary_live(ssm, tenant, "cache_size", before="1024")
        stop.set()
        await asyncio.gather(svc, return_exceptions=True)
        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(10)
        brokers[0].stop()
        brokers.append(start_tansu(port, ARTIFACTS / "logs" / "rb-reset-broker"))  # empty
        w2 = start_kaizen(["worker"], env, "rb-reset-w2")
        evs = await _events(own, tenant, _terminal, timeout=90, settle=1.0)
    finally:
        stop.set()
        w1.stop()
        if w2 is not None:
            w2.stop()
        for b in brokers:
            b.stop()
    statuses = [(e["status"], e["data"].get("verdict")) for e in evs]
    assert ("rolling_back", "state_lost") in statuses, statuses
    assert [s for s, _v in statuses if s in ("completed", "rolled_back", "failed", "conflict")] == ["failed"], statuses
    _assert_back_to_previous(ssm, tenant)


async def _conflicted(backend: Backend, ssm: Any, tenant: str) -> tuple[str, list[dict[str, Any]]]:
    """An improvement of `tenant` in monitoring, then its canary cache_size set by hand: paused as conflict."""
    await _start_improvement(backend, tenant)
    await _events(backend, tenant, _has("monitoring"), timeout=60)
    hand = f"/kaizen/{tenant}/api/canary/cache_size"
    ssm.put_parameter(Name=hand, Value="3000", Type="String", Overwrite=True)  # an operator's own value
    evs = await _events(backend, tenant, lambda e: _has("conflict")(e) or _terminal(e), timeout=40)
    assert _status_of(evs, "conflict"), [(e["status"], e["reason"]) for e in evs]
    return str(evs[-1]["improvement_id"]), evs


async def _poll(pred: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.5)
    return bool(pred())


async def test_a_conflict_is_resolved_through_mcp_retry_and_keep(
        backend: Backend, gate: AwsGate, tmp_path: Path, service_factory: Any) -> None:
    """Two improvements paused as conflict (their canary cache_size set by hand). The first: the operator puts
    the target back and an approver asks MCP `resolve_conflict retry_rollback` -> the rollback runs again and
    SSM ends at the previous values. The second: `keep_current` -> rejected, the hand-made value kept,
    kaizen's own canary keys undone. Every event on the topic parses as the typed union; both audited."""
    from fastmcp import Client

    from mcp_server.auth import Principal, TokenStore
    from mcp_server.testing import running_server
    from streams.improvement_events import parse_improvement_event
    from streams.settings import Settings

    ssm = _ssm(backend)
    retry, keep = f"rty-{uuid.uuid4().hex[:6]}", f"kep-{uuid.uuid4().hex[:6]}"
    for tenant in (retry, keep):
        _seed(ssm, tenant)
    tokens = {"approver-token-0123456789abcdef": Principal("bob", frozenset({retry, keep}),
                                                           frozenset({"approver"}))}
    settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap})
    worker = start_kaizen(["worker"], _env(backend, gate, tmp_path), "rb-resolve-worker")
    try:
        async with running_server(settings, TokenStore(tokens)) as srv:
            for tenant in (retry, keep):
                service_factory(tenant, "api", "good")
            (imp_r, _), (imp_k, _) = await asyncio.gather(_conflicted(backend, ssm, retry),
                                                          _conflicted(backend, ssm, keep))
            assert await srv.readmodel.wait_for(lambda v: all(
                (x := v.execution(i)) is not None and x.status == "conflict" for i in (imp_r, imp_k)), 15), \
                "MCP does not show the conflicts"
            ssm.delete_parameter(Name=f"/kaizen/{retry}/api/canary/cache_size")  # put back: it did not exist
            async with Client(srv.mcp_url, auth="approver-token-0123456789abcdef") as c:
                refused = await c.call_tool("resolve_conflict", {"improvement_id": imp_k, "action": "keep_current"},
                                            raise_on_error=False)
                assert refused.is_error and "needs a reason" in str(refused.content[0])
                r1 = (await c.call_tool("resolve_conflict", {"improvement_id": imp_r, "action": "retry_rollback",
                                                             "reason": "cache_size put back by hand"})
                      ).structured_content
                r2 = (await c.call_tool("resolve_conflict", {"improvement_id": imp_k, "action": "keep_current",
                                                             "reason": "3000 is what we want"})).structured_content
            assert r1["status"] == r2["status"] == "accepted" and r1["action"] == "retry_rollback"
            evs_r = await _events(backend, retry, _terminal, timeout=40)
            evs_k = await _events(backend, keep, _terminal, timeout=40)
            # the keep: kaizen's own canary keys still applied are undone by the journal reconciliation
            base = f"/kaizen/{keep}/api/canary"
            undone = await _poll(lambda: all(_get(ssm, f"{base}/{n}") is None
                                             for n in ("concurrency", "pool_size", "cache_ttl_seconds")), 30)
            audit = await collect(backend.kafka_bootstrap, [T.AUDIT], lambda ps: len(ps) >= 2, timeout=15,
                                  keep=lambda _t, r: r.get("action") == "improvement_resolve_conflict"
                                  and r.get("target") in (imp_r, imp_k))
            shown = await srv.readmodel.wait_for(
                lambda v: (x := v.execution(imp_k)) is not None and x.status == "rejected", 15)
    finally:
        worker.stop()
    final_r = [(e["status"], e["actor"]) for e in evs_r if e["status"] in ("rolling_back", "conflict", "completed",
                                                                          "rolled_back", "failed", "rejected")]
    assert final_r[-3:] == [("conflict", "kaizen"), ("rolling_back", "bob"), ("failed", "kaizen")], final_r
    assert evs_r[-1]["data"]["rollback"]["conflicts"] == [], evs_r[-1]["data"]
    _assert_back_to_previous(ssm, retry)
    assert [e["status"] for e in evs_k][-2:] == ["conflict", "rejected"]
    assert evs_k[-1]["data"]["resolution"]["action"] == "keep_current" and evs_k[-1]["actor"] == "bob"
    assert _get(ssm, f"{base}/cache_size") == "3000", "the hand-made value was not kept"
    assert _get(ssm, f"/kaizen/{keep}/api/concurrency") == "8" and _get(ssm, f"/kaizen/{keep}/api/cache_size") == "1024"
    assert undone, "kaizen's own canary keys of the given-up improvement stayed applied"
    assert shown, "MCP does not show the kept improvement as rejected"
    assert {r["detail"]["action"] for _t, r in audit} >= {"retry_rollback", "keep_current"}, audit
    for e in [*evs_r, *evs_k]:  # the events the real producers wrote: all accepted by the typed union
        parse_improvement_event(orjson.dumps(e))
