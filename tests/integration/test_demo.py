"""The demo workload against real endpoints: moto for CloudWatch/Logs/SSM, the Tansu broker for the timeline."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console

from connectors.cloudwatch.mapping import alarm_event, dims_to_dict
from kaizen.demo.cli import Demo
from kaizen.demo.scenarios import SCENARIOS
from kaizen.demo.workload.reporter import ServiceReporter
from kaizen.demo.workload.service import Faults, ServiceProfile, SimulatedService
from streams import topics as t
from streams.settings import Settings
from tests.conftest import Backend


def _reporter(tenant: str) -> ServiceReporter:
    svc = SimulatedService(ServiceProfile(tenant, "checkout"), seed=3, canary_fraction=0.1)
    return ServiceReporter(svc, boto3.client("cloudwatch"), boto3.client("logs"), boto3.client("ssm"),
                           namespace=f"Test/{tenant}")


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
    rep = _reporter(tenant)
    await rep.setup()
    await rep.setup()  # idempotent: existing log group, stream and parameters are kept
    ssm = boto3.client("ssm")
    assert ssm.get_parameter(Name=f"/kaizen/{tenant}/checkout/cache_size")["Parameter"]["Value"] == "1024"
    ssm.put_parameter(Name=f"/kaizen/{tenant}/checkout/canary/cache_size", Value="4096", Type="String")
    ssm.put_parameter(Name=f"/kaizen/{tenant}/checkout/cache_ttl_seconds", Value="120", Type="String",
                      Overwrite=True)
    full, canary = await rep.read_parameters()
    assert full["cache_ttl_seconds"] == 120.0 and canary == {"cache_size": 4096.0}
    assert rep.service.parameters["cache_ttl_seconds"] == 120.0
    rep.service.inject(Faults(working_set_factor=4.0))

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    ticks = [rep.service.tick(start + timedelta(seconds=i)) for i in range(5)]
    for tick in ticks:
        await rep.report(tick)

    cw = boto3.client("cloudwatch")
    latency = _average(cw, rep, "Latency", start, [])
    assert latency == [round(x.latency_ms, 6) for x in ticks] or all(
        abs(a - b.latency_ms) < 1e-6 for a, b in zip(latency, ticks, strict=True))
    canary_latency = _average(cw, rep, "Latency", start, [{"Name": "variant", "Value": "canary"}])
    assert len(canary_latency) == 5 and sum(canary_latency) < sum(latency)  # the bigger cache serves faster
    assert len(_average(cw, rep, "ErrorRate", start, [])) == 5
    assert _average(cw, rep, "RequestCount", start, []) == [float(x.requests) for x in ticks]
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=rep.namespace)["Metrics"]}
    assert names == {"Latency", "ErrorRate", "RequestCount", "CacheHitRate", "ActiveUsers"}

    logs = boto3.client("logs").filter_log_events(logGroupName=rep.log_group)["events"]
    assert len(logs) == sum(len(x.logs) for x in ticks) and logs[0]["logStreamName"] == f"tenant-{tenant}/i-1"


async def test_alarm_transitions_are_critical_for_the_connector(aws_env: Backend) -> None:
    tenant = "t" + uuid.uuid4().hex[:8]
    rep = _reporter(tenant)
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
    settings = Settings(kafka_bootstrap_servers=backend.kafka_bootstrap, aws_endpoint_url=backend.aws_endpoint)
    demo = Demo(settings, [SCENARIOS["latency-regression"]], Console(quiet=True))
    tl = demo.tracker.timelines["latency-regression"]
    tl.fault_injected_at = datetime.now(UTC) - timedelta(seconds=1)
    follower = asyncio.create_task(demo.follow())
    iid = "imp-" + uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap)
    await producer.start()

    async def send(topic: str, value: dict[str, object]) -> None:
        await producer.send_and_wait(topic, orjson.dumps({"tenant_id": "acme", **value}), key=b"acme")

    try:
        await send(t.INSIGHTS, {"insight_type": "performance_degradation", "description": "latency increase"})
        await send(t.OPPORTUNITIES, {"status": "open", "priority": "high", "problem_type": "latency", "title": "x"})
        for status, data in (("pending", {}), ("awaiting_approval", {}),
                             ("monitoring", {"deployment": {"stage": "canary"}}),
                             ("monitoring", {"deployment": {"stage": "full"}}),
                             ("completed", {"verdict": "keep", "degradation": 0.0})):
            await send(t.IMPROVEMENT_EVENTS, {"improvement_id": iid, "status": status, "data": data})
        assert await demo.until(tl, lambda x: x.verdict is not None, 20.0), tl
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await producer.stop()
    r = demo.tracker.report()["scenarios"]["latency-regression"]
    assert r["improvement_id"] == iid and r["verdict"] == "keep" and r["met_expectation"] is True
    assert r["first_anomaly_at"] <= r["opportunity_at"] <= r["deployed_at"] <= r["verdict_at"]
    assert r["rollback_at"] is None and r["approval"] == "automatic (guardrails)"


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
