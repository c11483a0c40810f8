"""The demo workload against real endpoints: moto for CloudWatch/Logs/SSM, the Tansu broker for the timeline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connectors.cloudwatch.mapping import alarm_event, dims_to_dict
from kaizen.demo.cli import outcome, select
from kaizen.demo.workload.reporter import ServiceReporter
from kaizen.embedded import free_port
from kaizen.lab.runner import Lab, LabTiming, _Bound
from kaizen.lab.sim import CaseSim
from streams import topics as t
from streams.settings import Settings
from tests.conftest import Backend


def _reporter(tenant: str) -> tuple[ServiceReporter, CaseSim]:
    """The latency-regression scenario's checkout, under another tenant, reported like the demo does."""
    case = select("latency-regression")[0].model_copy(update={"tenant": tenant})
    sim = CaseSim(case, canary_fraction=0.1)
    rep = ServiceReporter(_Bound(sim, tenant, "checkout"), boto3.client("cloudwatch"), boto3.client("logs"),
                          boto3.client("ssm"), namespace=f"Test/{tenant}", parameters=dict(case.services[0].knobs))
    return rep, sim


def _average(cw: object, rep: ServiceReporter, metric: str, start: datetime, extra: list[dict[str, str]]
             ) -> list[float]:
    res = cw.get_metric_data(  # type: ignore[attr-defined]
        MetricDataQueries=[{"Id": "q0", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": rep.namespace, "MetricName": metric, "Dimensions": [*rep.dimensions, *extra]},
            "Period": 1, "Stat": "Average"}}],
        StartTime=start - timedelta(seconds=1), EndTime=start + timedelta(seconds=30), ScanBy="TimestampAscending")
    return [float(v) for v in res["MetricDataResults"][0]["Values"]]


async def test_reporter_sends_metrics_logs_and_reads_ssm_with_canary(aws_env: Backend) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    rep, sim = _reporter(tenant)
    await rep.setup()
    await rep.setup()  # idempotent: existing log group, stream and parameters are kept
    ssm = boto3.client("ssm")
    assert ssm.get_parameter(Name=f"/kaizen/{tenant}/checkout/cache_size")["Parameter"]["Value"] == "1024"
    ssm.put_parameter(Name=f"/kaizen/{tenant}/checkout/canary/cache_size", Value="4096", Type="String")
    ssm.put_parameter(Name=f"/kaizen/{tenant}/checkout/cache_ttl_seconds", Value="120", Type="String",
                      Overwrite=True)
    full, canary = await rep.read_parameters()
    assert full["cache_ttl_seconds"] == 120.0 and canary == {"cache_size": 4096.0}
    assert sim.knobs["checkout"].full["cache_ttl_seconds"] == 120.0

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    faulted = sim.case.onset + 5  # the working set has grown: the canary's bigger cache serves faster
    ticks = [sim.tick(start + timedelta(seconds=i), faulted + i)["checkout"][0] for i in range(5)]
    for tick in ticks:
        await rep.report(tick)

    cw = boto3.client("cloudwatch")
    latency = _average(cw, rep, "Latency", start, [])
    assert all(abs(a - b.latency_ms) < 1e-6 for a, b in zip(latency, ticks, strict=True))
    canary_latency = _average(cw, rep, "Latency", start, [{"Name": "variant", "Value": "canary"}])
    assert len(canary_latency) == 5 and sum(canary_latency) < sum(latency)
    assert len(_average(cw, rep, "ErrorRate", start, [])) == 5
    assert _average(cw, rep, "RequestCount", start, []) == [float(x.requests) for x in ticks]
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=rep.namespace)["Metrics"]}
    assert names == {"Latency", "ErrorRate", "RequestCount", "CacheHitRate", "ActiveUsers"}

    logs = boto3.client("logs").filter_log_events(logGroupName=rep.log_group)["events"]
    assert len(logs) == sum(len(x.logs) for x in ticks) and logs[0]["logStreamName"] == f"tenant-{tenant}/i-1"


async def test_alarm_transitions_are_critical_for_the_connector(aws_env: Backend) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    rep, _sim = _reporter(tenant)
    name = f"{tenant}-checkout-critical-latency"
    await rep.put_alarm(name, "Latency", threshold=30.0, periods=3)
    cw = boto3.client("cloudwatch")
    assert [await rep.evaluate_alarm(v) for v in (40.0, 41.0)] == [None, None]  # not 3 periods yet
    assert await rep.evaluate_alarm(42.0) == "ALARM"
    assert await rep.evaluate_alarm(43.0) is None  # no repeated transition
    alarm = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    assert alarm["StateValue"] == "ALARM"
    assert dims_to_dict(alarm["Dimensions"])["tenant_id"] == tenant
    ev = alarm_event(alarm, "OK", {})
    assert ev.detail["severity"] == "critical" and ev.tenant_id == tenant
    for v in (10.0, 11.0):
        assert await rep.evaluate_alarm(v) is None
    assert await rep.evaluate_alarm(12.0) == "OK"
    assert cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"] == "OK"


async def test_demo_follows_the_loop_on_the_broker(backend: Backend) -> None:
    """The demo's scenario through the lab's one follower: the loop's records on the broker → its outcome."""
    settings = Settings(kafka_bootstrap_servers=backend.kafka_bootstrap, aws_endpoint_url=backend.aws_endpoint)
    case = select("latency-regression")[0]
    lab = Lab(settings, [case], lambda _m: None, LabTiming(stop_after_verdict=10.0))
    lab.t0 = asyncio.get_running_loop().time() - case.onset - 1  # the fault was injected a second ago
    lc = lab.cases[case.name]
    follower = asyncio.create_task(lab.follow())
    iid = "imp-" + uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await producer.start()

    async def send(topic: str, value: dict[str, object]) -> None:
        await producer.send_and_wait(topic, orjson.dumps({"tenant_id": "acme", **value}), key=b"acme")

    try:
        await send(t.INSIGHTS, {"insight_type": "performance_degradation", "affected_component": "checkout",
                                "description": "latency increase"})
        for status, data in (("pending", {"opportunity": {"affected_components": ["checkout"],
                                                          "problem_type": "latency"}}),
                             ("monitoring", {"deployment": {"stage": "canary"}}),
                             ("monitoring", {"deployment": {"stage": "full"}}),
                             ("rolled_back", {"verdict": "rollback", "degradation": 0.3})):
            await send(t.IMPROVEMENT_EVENTS, {"improvement_id": iid, "status": status, "data": data})
        assert await lab._wait(lambda: lc.verdict() is not None, 60.0), lc.steps
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await producer.stop()
    r = outcome(lab, lc)
    assert r["improvement_id"] == iid and r["verdict"] == "rollback" and r["met_expectation"] is False
    assert r["first_anomaly_at"] <= r["deployed_at"] <= r["full_deployed_at"] <= r["verdict_at"] == r["rollback_at"]
    assert r["approval"] == "automatic (guardrails)" and lab._finished(lc)


async def test_steering_without_mcp_publishes_commands(backend: Backend) -> None:
    from kaizen.demo.workload.steering import Steering
    from streams.commands import Decision, TriggerCycle, parse_command
    from tests.kafka_utils import collect

    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await producer.start()
    tenant = "t" + uuid.uuid4().hex[:8]
    try:
        steering = Steering(producer, None, None, None)
        assert not await steering.wait_for_mcp(timeout=0.1) and steering.via == "commands"
        assert "focused on billing/database_connection" in await steering.trigger(
            tenant, "billing", "database_connection")
        await steering.approve("imp-x", tenant, "looks right")
    finally:
        await producer.stop()
    pairs = await collect(backend.kafka_bootstrap, [t.COMMANDS],
                          until=lambda ps: sum(1 for _t, r in ps if r.get("tenant_id") == tenant) >= 2, timeout=60)
    cmds = [parse_command(orjson.dumps(r)) for _t, r in pairs if r.get("tenant_id") == tenant]
    trigger, approve = sorted(cmds, key=lambda c: c.kind != "trigger_cycle")
    assert isinstance(trigger, TriggerCycle) and isinstance(approve, Decision)
    assert trigger.kind == "trigger_cycle" and trigger.actor == "demo-operator"
    assert (trigger.analysis_window_hours, trigger.max_improvements, trigger.cycle_kind, trigger.component,
            trigger.problem_type) == (1, 1, "manual", "billing", "database_connection")
    assert approve.kind == "approve" and approve.actor == "demo-approver" != trigger.actor
    assert approve.improvement_id == "imp-x" and approve.roles == ["approver"]


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_bad_change_is_rolled_back_end_to_end(tmp_path: Path) -> None:
    """`kaizen demo --scenario bad-change --exit-after-cycle` on its own stack: the loop's change hurts and
    monitoring rolls it back; the report says so (generous deadline: a shared 2-core machine)."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "AWS_ENDPOINT_URL", "KAIZEN_DATA_DIR")}
    env.update({"KAIZEN_DATA_DIR": str(tmp_path / "data"), "SELF_BUILDING_MCP_PORT": str(free_port())})
    proc = subprocess.run([sys.executable, "-m", "kaizen.cli", "demo", "--scenario", "bad-change",
                           "--exit-after-cycle", "--report", str(report)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "bad-change: rolled back (as expected)" in proc.stdout
    assert "stopped every process the demo started" in proc.stdout
    r = orjson.loads(report.read_bytes())["scenarios"]["bad-change"]
    assert (r["verdict"], r["expected_verdict"], r["met_expectation"]) == ("rollback", "rollback", True)
    assert r["approval"].startswith("demo-approver") and r["rollback_at"] is not None
    assert r["score"]["detected"] is True and r["score"]["rollbacks"] >= 1
