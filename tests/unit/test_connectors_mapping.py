"""Pure mapping of CloudWatch answers: severity, fields, tenant, sampling, alarm severity, EventBridge events."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from connectors.cloudwatch.logs import glob_prefix
from connectors.cloudwatch.mapping import (
    alarm_event,
    alarm_severity,
    align_down,
    classify_eventbridge,
    eventbridge_event,
    log_tenant,
    parse_json_fields,
    parse_severity,
    sample_keep,
    tenant_allowed,
    to_datetime,
    unwrap_sqs_body,
)
from connectors.cloudwatch.metrics import is_percentile


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("[ERROR]\t2024-01-01T00:00:00Z\tboom", "ERROR"),
        ("2024-01-01 WARNING disk almost full", "WARN"),
        ("warn: retrying", "WARN"),
        ("DEBUG cache miss", "DEBUG"),
        ("CRITICAL db down", "CRITICAL"),
        ("FATAL out of memory", "FATAL"),
        ("Traceback (most recent call last):\n  File x", "ERROR"),
        ("START RequestId: 1 Version: $LATEST", "INFO"),
        ("INFO all good, no ERROR here", "INFO"),
    ],
)
def test_severity_from_text(message: str, expected: str) -> None:
    assert parse_severity(message) == expected


def test_severity_and_fields_from_json() -> None:
    line = '{"level": "warning", "tenant_id": "acme", "msg": "ERROR in text but level wins", "n": 3}'
    fields = parse_json_fields(line)
    assert fields == {"level": "warning", "tenant_id": "acme", "msg": "ERROR in text but level wins", "n": 3}
    assert parse_severity(line, fields) == "WARN"
    assert parse_severity("x", {"severity": "Error"}) == "ERROR"
    assert parse_json_fields("not json {") == {}
    assert parse_json_fields("{broken json}") == {}


def test_log_tenant_field_then_stream_then_group_then_default() -> None:
    assert log_tenant({"tenant_id": "acme"}, "tenant-other/1", "/g") == "acme"
    assert log_tenant({}, "2024/01/01/tenant-beta/[$LATEST]abc", "/aws/lambda/x") == "beta"
    assert log_tenant({}, "s", "/aws/lambda/happyos-tenant_gamma-api") == "gamma"
    assert log_tenant({}, "s", "/aws/lambda/happyos-api") == "default"
    assert log_tenant({"org": "z"}, "s", "/g", tenant_field="org") == "z"


def test_sampling_is_deterministic_and_keeps_errors() -> None:
    ids = [f"l-{i}" for i in range(4000)]
    kept = [i for i in ids if sample_keep(i, "INFO", 0.25)]
    assert 800 < len(kept) < 1200
    assert kept == [i for i in ids if sample_keep(i, "INFO", 0.25)]
    assert all(sample_keep(i, sev, 0.0) for i in ids[:50] for sev in ("ERROR", "CRITICAL", "FATAL"))
    assert not any(sample_keep(i, "INFO", 0.0) for i in ids[:50])
    assert all(sample_keep(i, "DEBUG", 1.0) for i in ids[:50])


def test_alarm_severity_rule() -> None:
    assert alarm_severity("api-critical-latency", "", {}, "ALARM") == "critical"
    assert alarm_severity("latency", "Critical path is slow", {}, "ALARM") == "critical"
    assert alarm_severity("latency", "", {"Severity": "CRITICAL"}, "OK") == "critical"
    assert alarm_severity("latency", "", {"critical": "true"}, "ALARM") == "critical"
    assert alarm_severity("latency", "", {"severity": "medium"}, "ALARM") == "medium"
    assert alarm_severity("latency", "", {}, "ALARM") == "high"
    assert alarm_severity("latency", "", {}, "INSUFFICIENT_DATA") == "medium"
    assert alarm_severity("latency", "", {}, "OK") == "low"


def test_alarm_event_maps_describe_alarms_entry() -> None:
    alarm = {"AlarmName": "lat-critical", "AlarmArn": "arn:a", "StateValue": "ALARM", "StateReason": "x > 5",
             "MetricName": "Latency", "Namespace": "NS", "Threshold": 5.0,
             "Dimensions": [{"Name": "tenant_id", "Value": "acme"}, {"Name": "service", "Value": "api"}],
             "StateUpdatedTimestamp": datetime(2026, 1, 1, tzinfo=UTC)}
    ev = alarm_event(alarm, "OK", {})
    assert ev.event_type == "alarm" and ev.tenant_id == "acme" and ev.source == "aws.cloudwatch"
    assert ev.detail["old_state"] == "OK" and ev.detail["new_state"] == "ALARM"
    assert ev.detail["severity"] == "critical" and ev.detail["dimensions"]["service"] == "api"
    assert ev.event_id == alarm_event(alarm, "OK", {}).event_id  # deterministic: a restart re-sends the same id


@pytest.mark.parametrize(
    ("source", "detail_type", "kind"),
    [
        ("aws.cloudwatch", "CloudWatch Alarm State Change", "alarm"),
        ("lambda", "Lambda Function Invocation Result - Failure", "lambda_completion"),
        ("aws.lambda", "AWS API Call via CloudTrail", "lambda_completion"),
        ("aws.codedeploy", "CodeDeploy Deployment State-change Notification", "deployment"),
        ("aws.ecs", "ECS Deployment State Change", "deployment"),
        ("my.app", "OrderPlaced", "custom"),
    ],
)
def test_eventbridge_classification(source: str, detail_type: str, kind: str) -> None:
    assert classify_eventbridge(source, detail_type) == kind


def test_eventbridge_alarm_envelope() -> None:
    body = {
        "version": "0", "id": "e1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
        "time": "2026-01-01T10:00:00Z", "region": "us-east-1", "resources": ["arn:alarm"],
        "detail": {"alarmName": "api-errors", "state": {"value": "ALARM", "reason": "threshold"},
                   "previousState": {"value": "OK"},
                   "configuration": {"description": "critical errors",
                                     "metrics": [{"metricStat": {"metric": {
                                         "name": "Errors", "dimensions": {"tenant_id": "acme"}}}}]}},
    }
    ev = eventbridge_event(body)
    assert ev.event_type == "alarm" and ev.tenant_id == "acme"
    assert ev.timestamp == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert ev.detail["old_state"] == "OK" and ev.detail["new_state"] == "ALARM"
    assert ev.detail["severity"] == "critical" and ev.detail["metric_name"] == "Errors"


def test_eventbridge_custom_tenant_and_sns_unwrap() -> None:
    inner = {"source": "my.app", "detail-type": "Deploy", "time": "2026-01-01T10:00:00Z",
             "detail": {"tenant_id": "t9", "version": "1.2"}}
    wrapped = orjson.dumps({"Type": "Notification", "Message": orjson.dumps(inner).decode()}).decode()
    ev = eventbridge_event(unwrap_sqs_body(wrapped))
    assert ev.event_type == "deployment" and ev.tenant_id == "t9" and ev.detail["version"] == "1.2"
    with pytest.raises(KeyError):
        eventbridge_event({"detail": {}})
    with pytest.raises(ValueError):
        unwrap_sqs_body("[1, 2]")


def test_time_helpers_and_filters() -> None:
    assert align_down(1_000_000_123, 300) == 999_999_900
    assert align_down(600, 300) == 600
    assert to_datetime(1_700_000_000_000) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert to_datetime("2026-01-01 10:00:00.000") == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert tenant_allowed("a", []) and tenant_allowed("a", ["a"]) and not tenant_allowed("b", ["a"])
    assert glob_prefix("/aws/lambda/happyos-*") == "/aws/lambda/happyos-"
    assert glob_prefix("*") == ""
    assert all(is_percentile(s) for s in ("p95", "p99.9", "tm99", "TM(10%:90%)", "IQM"))
    assert not any(is_percentile(s) for s in ("Average", "Sum", "Maximum", "Minimum", "SampleCount"))
