"""CloudWatch connectors against moto's server through the real Tansu broker: exactly once, logs, events, outage."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from connectors.breaker import CircuitBreaker
from connectors.cloudwatch.client import AwsClients, GuardedClient, boto_config, make_clients
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.logs import LogsSource
from connectors.cloudwatch.mapping import align_down
from connectors.cloudwatch.runner import ConnectorRunner
from connectors.publisher import TelemetryPublisher
from kaizen.embedded import MOTO_CREDENTIALS, start_moto, start_tansu
from streams import topics as T
from streams.records import MetricDataPoint
from streams.settings import Settings
from tests.conftest import Backend
from tests.kafka_utils import collect


def _settings(tmp_path: Path, backend: Backend, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": backend.kafka_bootstrap, "aws_endpoint_url": backend.aws_endpoint,
        "kaizen_data_dir": tmp_path / "data", "cloudwatch_fallback_dir": tmp_path / "fallback",
        "cloudwatch_metrics_period": 60, "cloudwatch_metrics_lag_seconds": 1800,
        "cloudwatch_stream_interval_seconds": 0.3,
    }
    return Settings(**{**base, **kw})


def _clients(settings: Settings, endpoint: str | None = None) -> AwsClients:
    return make_clients(settings, endpoint_url=endpoint,
                        config=boto_config(max_attempts=1, connect_timeout=1, read_timeout=10))


def _boto(backend_endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=backend_endpoint, region_name="us-east-1",  # type: ignore[call-overload]
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
async def publisher(backend: Backend) -> AsyncIterator[TelemetryPublisher]:
    pub = TelemetryPublisher(backend.kafka_bootstrap, acks="all", linger_ms=5)
    await pub.start()
    try:
        yield pub
    finally:
        await pub.stop()


async def _run_polls(runner: ConnectorRunner, polls: int, timeout: float = 30.0) -> None:
    """Run the runner's loop until it completed `polls` polls; fail (not hang) if it dies or stalls."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while runner.polls < polls:
            if task.done():
                task.result()  # raises what killed the loop
                pytest.fail("the runner stopped before polling")
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"only {runner.polls} polls within {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


def _series_ts(rec: dict[str, Any]) -> tuple[str, str]:
    point = MetricDataPoint.model_validate(rec)
    return point.series_key(), point.timestamp.isoformat()


async def test_metrics_exactly_once_across_restart(aws_env: Backend, tmp_path: Path,
                                                   publisher: TelemetryPublisher) -> None:
    backend = aws_env
    ns = f"Test/Conn{uuid.uuid4().hex[:8]}"
    settings = _settings(tmp_path, backend, cloudwatch_namespace=ns,
                         cloudwatch_metrics_statistics=["Average", "Sum", "Maximum", "p95"])
    cw = _boto(backend.aws_endpoint, "cloudwatch")
    base = align_down(datetime.now(UTC).timestamp(), 60)

    def at(minutes_ago: int) -> datetime:
        return datetime.fromtimestamp(base - minutes_ago * 60 + 10, UTC)

    for m in range(20, 10, -1):  # tenant a, ten complete windows, through boto3
        cw.put_metric_data(Namespace=ns, MetricData=[{
            "MetricName": "Latency", "Value": float(m), "Unit": "Milliseconds", "Timestamp": at(m),
            "Dimensions": [{"Name": "tenant_id", "Value": "a"}, {"Name": "service", "Value": "api"}]}])
    aws = str(Path(sys.executable).parent / "aws")
    for m in (15, 12):  # tenant b through the aws CLI, as a user would
        subprocess.run([aws, "--endpoint-url", backend.aws_endpoint, "cloudwatch", "put-metric-data",
                        "--namespace", ns, "--metric-name", "Latency", "--unit", "Milliseconds",
                        "--dimensions", "tenant_id=b,service=api", "--value", str(m * 2),
                        "--timestamp", at(m).strftime("%Y-%m-%dT%H:%M:%SZ")],
                       check=True, env={**backend.aws_env()}, capture_output=True, timeout=60)

    first = ConnectorRunner(settings, publisher, _clients(settings), sources=("metrics",),
                            metrics_lookback_seconds=1500)
    await _run_polls(first, 3)
    status = first.status()
    src = status["sources"][f"metrics:{ns}"]
    assert src["unsupported_statistics"] == ["p95"], src  # moto answers 500 to percentiles
    assert src["records"] == (10 + 2) * 3 and src["errors"] == 0

    # between the runs: a late datapoint for an empty past window (within the lag), a late value for a
    # window already published (not re-emitted), and two new windows
    cw.put_metric_data(Namespace=ns, MetricData=[
        {"MetricName": "Latency", "Value": 99.0, "Timestamp": at(13),
         "Dimensions": [{"Name": "tenant_id", "Value": "b"}, {"Name": "service", "Value": "api"}]},
        {"MetricName": "Latency", "Value": 500.0, "Timestamp": at(20),
         "Dimensions": [{"Name": "tenant_id", "Value": "a"}, {"Name": "service", "Value": "api"}]},
    ])
    second = ConnectorRunner(settings, publisher, _clients(settings), sources=("metrics",),
                             metrics_lookback_seconds=1500)
    await _run_polls(second, 3)
    assert second.status()["sources"][f"metrics:{ns}"]["records"] == 3  # only the late window, 3 statistics

    expected = 3 * (10 + 3)
    pairs = await collect(backend.kafka_bootstrap, [T.RAW_TOPICS["metric"]], lambda p: len(p) >= expected,
                          keep=lambda _t, r: r.get("namespace") == ns, settle=1.5)
    ids = Counter(r["event_id"] for _, r in pairs)
    assert len(pairs) == expected and all(c == 1 for c in ids.values()), ids.most_common(3)
    series = Counter(_series_ts(r) for _, r in pairs)
    assert all(c == 1 for c in series.values())
    assert {r["statistic"] for _, r in pairs} == {"Average", "Sum", "Maximum"}
    assert {r["unit"] for _, r in pairs} == {"Milliseconds"}  # learnt once per metric via GetMetricStatistics
    by_tenant = Counter(r["tenant_id"] for _, r in pairs)
    assert by_tenant == {"a": 30, "b": 9}
    late = [r for _, r in pairs if r["tenant_id"] == "b" and r["statistic"] == "Sum"]
    assert sorted(r["value"] for r in late) == [24.0, 30.0, 99.0]
    assert all(datetime.fromisoformat(r["timestamp"]).timestamp() % 60 == 0 for _, r in pairs)  # aligned


async def test_logs_sampling_and_insights(aws_env: Backend, tmp_path: Path, publisher: TelemetryPublisher) -> None:
    backend = aws_env
    uid = uuid.uuid4().hex[:8]
    logs = _boto(backend.aws_endpoint, "logs")
    now_ms = int(datetime.now(UTC).timestamp() * 1000)

    def put(group: str, stream: str, lines: list[str], ts: int) -> None:
        try:
            logs.create_log_group(logGroupName=group)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        try:
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": ts, "message": m} for m in lines])

    g1 = f"/aws/lambda/happyos-{uid}-api"
    put(g1, "2026/01/01/tenant-acme/[$LATEST]1", ["[ERROR] boom", "INFO ok"], now_ms - 5000)
    put(g1, "plain", [json.dumps({"level": "warn", "tenant_id": "zeta", "msg": "slow"})], now_ms - 5000)
    put(f"/aws/lambda/other-{uid}", "s", ["INFO not matched"], now_ms - 5000)
    settings = _settings(tmp_path, backend, cloudwatch_log_group_pattern=f"/aws/lambda/happyos-{uid}-*")
    runner = ConnectorRunner(settings, publisher, _clients(settings), sources=("logs",))
    assert (await runner.poll_once())[f"logs:{settings.cloudwatch_log_group_pattern}"] == 3
    put(g1, "plain", ["DEBUG later"], now_ms - 5000)  # same timestamp as the cursor, new event id
    runner2 = ConnectorRunner(settings, publisher, _clients(settings), sources=("logs",))  # restart
    assert sum((await runner2.poll_once()).values()) == 1
    assert sum((await runner2.poll_once()).values()) == 0

    paged = LogsSource(GuardedClient("logs", _clients(settings).logs, CircuitBreaker("paged")),
                       CursorStore(tmp_path / "paged"), settings, page_limit=1)
    batch = await paged.collect(datetime.now(UTC))  # FilterLogEvents one event per page: nextToken paging
    assert sorted(r.model_dump()["message"] for r in batch.records) == sorted(
        ["[ERROR] boom", "INFO ok", json.dumps({"level": "warn", "tenant_id": "zeta", "msg": "slow"}), "DEBUG later"])
    assert paged.client.breaker.calls >= 5

    g2 = f"/aws/lambda/happyos-{uid}-sampled"
    put(g2, "s", ["INFO a", "ERROR b", "DEBUG c", "CRITICAL d", "WARN e"], now_ms - 4000)
    s2 = _settings(tmp_path / "s2", backend, cloudwatch_log_group_pattern=g2, cloudwatch_log_sampling_rate=0.0)
    sampled = ConnectorRunner(s2, publisher, _clients(s2), sources=("logs",))
    assert sum((await sampled.poll_once()).values()) == 2
    assert sampled.status()["sources"][f"logs:{g2}"]["sampled_out"] == 3

    g3 = f"/aws/lambda/happyos-{uid}-insights"
    put(g3, "tenant-ins/1", ["ERROR via insights"], now_ms - 3000)
    s3 = _settings(tmp_path / "s3", backend, cloudwatch_log_group_pattern=g3,
                   cloudwatch_logs_insights_query="fields @timestamp, @message, @logStream, @log")
    ins = ConnectorRunner(s3, publisher, _clients(s3), sources=("logs",), logs_lookback_seconds=600)
    assert sum((await ins.poll_once()).values()) == 1
    assert ins.status()["sources"][f"logs:{g3}"]["mode"] == "insights"

    pairs = await collect(backend.kafka_bootstrap, [T.RAW_TOPICS["log"]], lambda p: len(p) >= 7,
                          keep=lambda _t, r: uid in r.get("log_group", ""), settle=1.0)
    recs = [r for _, r in pairs]
    assert len(recs) == 7 and len({r["event_id"] for r in recs}) == 7
    by_msg = {r["message"]: r for r in recs}
    assert by_msg["[ERROR] boom"]["severity"] == "ERROR" and by_msg["[ERROR] boom"]["tenant_id"] == "acme"
    slow = next(r for r in recs if "slow" in r["message"])
    assert slow["severity"] == "WARN" and slow["tenant_id"] == "zeta" and slow["fields"]["msg"] == "slow"
    assert by_msg["DEBUG later"]["tenant_id"] == "default"
    assert {r["message"] for r in recs if r["log_group"] == g2} == {"ERROR b", "CRITICAL d"}
    assert by_msg["ERROR via insights"]["tenant_id"] == "ins"


async def test_late_log_lines_within_the_lag_are_picked_up_once(aws_env: Backend, tmp_path: Path,
                                                                 publisher: TelemetryPublisher) -> None:
    logs = _boto(aws_env.aws_endpoint, "logs")
    group = f"/aws/lambda/happyos-{uuid.uuid4().hex[:8]}-late"
    logs.create_log_group(logGroupName=group)
    for stream in ("a", "b"):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    newest = int(datetime.now(UTC).timestamp() * 1000) - 5000

    def put(stream: str, message: str, ts: int) -> None:
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": ts, "message": message}])

    put("a", "INFO first", newest)
    settings = _settings(tmp_path, aws_env, cloudwatch_log_group_pattern=group, cloudwatch_logs_lag_seconds=120)
    runner = ConnectorRunner(settings, publisher, _clients(settings), sources=("logs",))
    assert sum((await runner.poll_once()).values()) == 1
    # Ingested after that poll, stamped earlier by the application: 30 s behind (within the lag) and 10 min
    # behind (beyond it).
    put("b", "WARN arrived late", newest - 30_000)
    put("b", "WARN far too late", newest - 600_000)
    again = ConnectorRunner(settings, publisher, _clients(settings), sources=("logs",))  # a restart, too
    assert sum((await again.poll_once()).values()) == 1
    assert sum((await again.poll_once()).values()) == 0  # nothing repeated
    pairs = await collect(aws_env.kafka_bootstrap, [T.RAW_TOPICS["log"]], lambda p: len(p) >= 2,
                          keep=lambda _t, r: r.get("log_group") == group, settle=1.0)
    assert sorted(r["message"] for _, r in pairs) == ["INFO first", "WARN arrived late"]


async def test_eventbridge_queue_and_alarm_transitions(aws_env: Backend, tmp_path: Path,
                                                       publisher: TelemetryPublisher) -> None:
    backend = aws_env
    uid = uuid.uuid4().hex[:8]
    sqs, events, cw = (_boto(backend.aws_endpoint, s) for s in ("sqs", "events", "cloudwatch"))
    url = sqs.create_queue(QueueName=f"kz-{uid}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"r-{uid}", EventPattern=json.dumps({"source": [f"kaizen.test.{uid}"]}))
    events.put_targets(Rule=f"r-{uid}", Targets=[{"Id": "q", "Arn": arn}])
    res = events.put_events(Entries=[{"Source": f"kaizen.test.{uid}", "DetailType": "ECS Deployment State Change",
                                      "Detail": json.dumps({"tenant_id": "acme", "uid": uid})}])
    assert res["FailedEntryCount"] == 0
    sqs.send_message(QueueUrl=url, MessageBody=f"not an event {uid}")
    # moto does not emit "CloudWatch Alarm State Change" to EventBridge: send that envelope to SQS directly
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({
        "version": "0", "id": f"eb-{uid}", "source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change",
        "time": "2026-01-01T10:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"alarmName": f"eb-{uid}", "state": {"value": "ALARM", "reason": "r"}, "previousState": {"value": "OK"},
                   "configuration": {"metrics": [{"metricStat": {"metric": {
                       "name": "Errors", "dimensions": {"tenant_id": "beta"}}}}]}}}))
    cw.put_metric_alarm(AlarmName=f"{uid}-critical-latency", MetricName="Latency", Namespace="NS",
                        Statistic="Average", Period=60, EvaluationPeriods=1, Threshold=5,
                        ComparisonOperator="GreaterThanThreshold",
                        Dimensions=[{"Name": "tenant_id", "Value": "acme"}])
    settings = _settings(tmp_path, backend, cloudwatch_events_queue_url=url, cloudwatch_alarm_prefix=uid)
    runner = ConnectorRunner(settings, publisher, _clients(settings), sources=("alarms", "queue"),
                             queue_wait_seconds=1)
    first = await runner.poll_once()
    assert first == {f"alarms:{uid}": 0, f"queue:{url}": 2}  # moto delivered EventBridge → SQS
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    cw.set_alarm_state(AlarmName=f"{uid}-critical-latency", StateValue="ALARM", StateReason="latency > 5")
    assert (await runner.poll_once())[f"alarms:{uid}"] == 1
    assert (await runner.poll_once())[f"alarms:{uid}"] == 0
    restarted = ConnectorRunner(settings, publisher, _clients(settings), sources=("alarms",))
    assert (await restarted.poll_once())[f"alarms:{uid}"] == 0
    q = runner.status()["sources"][f"queue:{url}"]
    assert q["dead_letters"] == 1 and q["deleted"] == 3

    pairs = await collect(backend.kafka_bootstrap, [T.RAW_TOPICS["event"], T.DEADLETTER], lambda p: len(p) >= 4,
                          keep=lambda _t, r: uid in json.dumps(r), settle=1.5)
    evs = [r for t, r in pairs if t == T.RAW_TOPICS["event"]]
    alarms = [r for r in evs if r["event_type"] == "alarm" and r["detail"]["origin"] == "describe_alarms"]
    assert len(alarms) == 1 and alarms[0]["detail"]["new_state"] == "ALARM"
    assert alarms[0]["detail"]["severity"] == "critical" and alarms[0]["tenant_id"] == "acme"
    eb_alarm = [r for r in evs if r["event_type"] == "alarm" and r["detail"]["origin"] == "eventbridge"]
    assert len(eb_alarm) == 1 and eb_alarm[0]["tenant_id"] == "beta" and eb_alarm[0]["detail"]["old_state"] == "OK"
    deploys = [r for r in evs if r["event_type"] == "deployment"]
    assert len(deploys) == 1 and deploys[0]["tenant_id"] == "acme" and deploys[0]["detail"]["uid"] == uid
    dead = [r for t, r in pairs if t == T.DEADLETTER]
    assert len(dead) == 1 and dead[0]["original"] == f"not an event {uid}"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_outage_opens_breaker_uses_fallback_and_fills_gap(backend: Backend, tmp_path: Path,
                                                                publisher: TelemetryPublisher,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**MOTO_CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    uid = uuid.uuid4().hex[:8]
    ns = f"Test/Outage{uid}"
    moto = start_moto(0, tmp_path / "moto-logs")
    try:
        endpoint = f"http://127.0.0.1:{moto.port}"
        base = align_down(datetime.now(UTC).timestamp(), 60)
        wall = {"now": datetime.fromtimestamp(base - 6 * 60 + 1, UTC)}
        clock = FakeClock()

        def put(minutes_ago: list[int]) -> None:
            cw = _boto(endpoint, "cloudwatch")
            for m in minutes_ago:
                cw.put_metric_data(Namespace=ns, MetricData=[{
                    "MetricName": "Errors", "Value": float(m), "Timestamp": datetime.fromtimestamp(base - m * 60 + 5, UTC),
                    "Dimensions": [{"Name": "tenant_id", "Value": "t1"}]}])

        put([10, 9, 8, 7])
        fb = tmp_path / "fallback"
        fb.mkdir()
        line = {"metric_name": "Errors", "value": 1.0, "tenant_id": "t1", "namespace": f"Fallback/{uid}",
                "timestamp": (datetime.fromtimestamp(base, UTC) - timedelta(minutes=3)).isoformat()}
        (fb / "metrics.jsonl").write_text("".join(json.dumps({**line, "value": float(i)}) + "\n" for i in range(3)))
        settings = _settings(tmp_path, backend, aws_endpoint_url=endpoint, cloudwatch_namespace=ns,
                             cloudwatch_metrics_statistics=["Sum"], cloudwatch_metrics_lag_seconds=120,
                             cloudwatch_fallback_dir=fb)
        runner = ConnectorRunner(settings, publisher, _clients(settings, endpoint), sources=("metrics",),
                                 clock=clock, now=lambda: wall["now"], metrics_lookback_seconds=600)
        assert (await runner.poll_once())[f"metrics:{ns}"] == 4
        moto.stop()
        wall["now"] = datetime.fromtimestamp(base + 1, UTC)
        for i in range(3):
            counts = await runner.poll_once()
            assert counts[f"metrics:{ns}"] == 0
        status = runner.status()
        assert status["breakers"]["cloudwatch"]["state"] == "open", status
        assert status["breakers"]["cloudwatch"]["failures"] == 3 and status["using_fallback"]["metric"] is True
        assert counts["fallback:metric"] == 3 and status["fallback_records"]["metric"] == 3
        with open(fb / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({**line, "value": 3.0}) + "\n")
        counts = await runner.poll_once()
        assert counts == {f"metrics:{ns}": 0, "fallback:metric": 1}
        assert runner.status()["sources"][f"metrics:{ns}"]["skipped_breaker_open"] >= 1

        moto = start_moto(moto.port, tmp_path / "moto-logs")  # the endpoint returns (empty: a fresh moto)
        put([5, 4, 3, 2, 1])  # what CloudWatch recorded while the connector could not read it
        clock.t += settings.cloudwatch_breaker_recovery_seconds + 1  # half-open: the next poll is a trial
        counts = await runner.poll_once()
        assert counts[f"metrics:{ns}"] == 5 and "fallback:metric" not in counts
        status = runner.status()
        assert status["breakers"]["cloudwatch"]["state"] == "closed" and status["using_fallback"]["metric"] is False
        assert status["breakers"]["cloudwatch"]["opens"] == 1

        pairs = await collect(backend.kafka_bootstrap, [T.RAW_TOPICS["metric"]], lambda p: len(p) >= 13,
                              keep=lambda _t, r: uid in r.get("namespace", ""), settle=1.0)
        got = sorted((r["namespace"].split("/")[0], r["value"]) for _, r in pairs)
        assert got == sorted([("Test", float(m)) for m in (10, 9, 8, 7, 5, 4, 3, 2, 1)]
                             + [("Fallback", float(i)) for i in range(4)])
        cursor = CursorStore(settings.kaizen_data_dir / "cursors").load(f"metrics:{ns}")
        assert cursor["end"] == base
    finally:
        moto.stop()


async def test_sqs_messages_kept_when_kafka_does_not_acknowledge(aws_env: Backend, tmp_path: Path) -> None:
    backend = aws_env
    uid = uuid.uuid4().hex[:8]
    sqs = _boto(backend.aws_endpoint, "sqs")
    url = sqs.create_queue(QueueName=f"kz-nack-{uid}")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(
        {"source": "my.app", "detail-type": "Custom", "time": "2026-01-01T00:00:00Z", "detail": {"uid": uid}}))
    broker = start_tansu(0, tmp_path / "tansu")
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{broker.port}", request_timeout_ms=1500,
                                acks="all", enable_idempotence=False)
    pub = TelemetryPublisher(f"127.0.0.1:{broker.port}", producer=producer)
    await pub.start()
    try:
        broker.stop()  # Kafka goes away after the connector started
        settings = _settings(tmp_path, backend, cloudwatch_events_queue_url=url)
        runner = ConnectorRunner(settings, pub, _clients(settings), sources=("queue",), queue_wait_seconds=1)
        with pytest.raises(KafkaError):
            await runner.poll_once()
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"  # received, not deleted: redelivered later
        assert runner.status()["sources"][f"queue:{url}"]["deleted"] == 0
    finally:
        broker.stop()
        await producer.stop()
