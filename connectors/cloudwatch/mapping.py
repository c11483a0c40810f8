"""Pure mapping of CloudWatch answers to kaizen records: severity, fields, tenant, sampling, alarm and EventBridge events."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.records import CloudWatchEvent

DEFAULT_TENANT = "default"
ALWAYS_KEPT = frozenset({"ERROR", "CRITICAL", "FATAL"})
_LEVELS = {
    "CRITICAL": "CRITICAL", "CRIT": "CRITICAL", "FATAL": "FATAL", "ERROR": "ERROR", "ERR": "ERROR",
    "WARN": "WARN", "WARNING": "WARN", "INFO": "INFO", "DEBUG": "DEBUG", "TRACE": "DEBUG",
}
_LEVEL_RE = re.compile(r"\b(CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG)\b", re.IGNORECASE)
_ERROR_HINT_RE = re.compile(r"Traceback \(most recent call last\)|\bException\b|\bpanic:", re.IGNORECASE)
# Tenant from a log stream or group name: ".../tenant-acme/...", "tenant_acme", "tenant=acme".
DEFAULT_TENANT_NAME_RE = re.compile(r"tenant[-_=:]([A-Za-z0-9][A-Za-z0-9_.]*)", re.IGNORECASE)


def to_datetime(value: Any) -> datetime:
    """Epoch milliseconds, ISO text or a datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
        return datetime.fromtimestamp(int(value) / 1000.0, UTC)
    text = str(value).replace("Z", "+00:00")
    if " " in text and "T" not in text:
        text = text.replace(" ", "T", 1)
    return to_datetime(datetime.fromisoformat(text))


def align_down(epoch_seconds: float, period: int) -> int:
    """The start of the period containing the instant (CloudWatch periods are epoch-aligned)."""
    return int(epoch_seconds // period * period)


def parse_json_fields(message: str) -> dict[str, Any]:
    """A JSON object log line becomes its fields; anything else has none."""
    text = message.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return {}
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def parse_severity(message: str, fields: Mapping[str, Any] | None = None) -> str:
    """ERROR/WARN/INFO/DEBUG/CRITICAL/FATAL from a JSON `level`/`severity` field, else the first level word
    of the text; a traceback or exception with no level word is ERROR; nothing at all is INFO."""
    for key in ("level", "severity", "levelname", "log_level"):
        value = (fields or {}).get(key)
        if isinstance(value, str) and value.strip().upper() in _LEVELS:
            return _LEVELS[value.strip().upper()]
    m = _LEVEL_RE.search(message[:500])
    if m:
        return _LEVELS[m.group(1).upper()]
    if _ERROR_HINT_RE.search(message):
        return "ERROR"
    return "INFO"


def tenant_from_names(*names: str, pattern: re.Pattern[str] = DEFAULT_TENANT_NAME_RE) -> str | None:
    for name in names:
        m = pattern.search(name or "")
        if m:
            return m.group(1)
    return None


def log_tenant(
    fields: Mapping[str, Any], log_stream: str, log_group: str, *, tenant_field: str = "tenant_id",
    pattern: re.Pattern[str] = DEFAULT_TENANT_NAME_RE,
) -> str:
    """Tenant of a log line: its JSON field, else the stream name, else the group name, else 'default'."""
    value = fields.get(tenant_field)
    if isinstance(value, str | int) and str(value):
        return str(value)
    return tenant_from_names(log_stream, log_group, pattern=pattern) or DEFAULT_TENANT


def sample_keep(event_id: str, severity: str, rate: float) -> bool:
    """Deterministic sampling by hash of the event id; ERROR, CRITICAL and FATAL lines are never dropped."""
    if rate >= 1.0 or severity in ALWAYS_KEPT:
        return True
    if rate <= 0.0:
        return False
    bucket = int.from_bytes(hashlib.sha1(event_id.encode()).digest()[:8], "big") / 2**64
    return bucket < rate


def tenant_allowed(tenant: str, tenant_filter: Sequence[str]) -> bool:
    """CLOUDWATCH_TENANT_FILTER: an empty filter lets every tenant through."""
    return not tenant_filter or tenant in tenant_filter


def dims_to_dict(dimensions: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(d.get("Name") or d.get("name")): str(d.get("Value") or d.get("value") or "")
            for d in (dimensions or [])}


def alarm_severity(name: str, description: str, tags: Mapping[str, str], state: str) -> str:
    """The severity rule of alarm events.

    critical: a tag `severity`/`Severity`/`priority` equal to critical (case-insensitive), a tag named
    `critical` with value true/yes/1, or the word "critical" in the alarm name or description.
    Otherwise a `severity` tag with low/medium/high is used as given; otherwise by state:
    ALARM → high, INSUFFICIENT_DATA → medium, OK → low.
    """
    lowered = {k.lower(): str(v).strip().lower() for k, v in tags.items()}
    if lowered.get("severity") == "critical" or lowered.get("priority") == "critical":
        return "critical"
    if lowered.get("critical") in {"true", "yes", "1"}:
        return "critical"
    if "critical" in name.lower() or "critical" in (description or "").lower():
        return "critical"
    if lowered.get("severity") in {"low", "medium", "high"}:
        return lowered["severity"]
    return {"ALARM": "high", "INSUFFICIENT_DATA": "medium"}.get(state, "low")


def alarm_event(
    alarm: Mapping[str, Any], old_state: str, tags: Mapping[str, str], *, tenant_dimension: str = "tenant_id",
) -> CloudWatchEvent:
    """A DescribeAlarms entry whose state changed, as an `alarm` CloudWatchEvent."""
    dims = dims_to_dict(alarm.get("Dimensions"))
    if not dims:
        for m in alarm.get("Metrics") or []:
            dims.update(dims_to_dict(((m.get("MetricStat") or {}).get("Metric") or {}).get("Dimensions")))
    name = str(alarm.get("AlarmName", ""))
    state = str(alarm.get("StateValue", ""))
    detail = {
        "alarm_name": name,
        "alarm_arn": alarm.get("AlarmArn"),
        "old_state": old_state,
        "new_state": state,
        "reason": alarm.get("StateReason", ""),
        "metric_name": alarm.get("MetricName"),
        "namespace": alarm.get("Namespace"),
        "dimensions": dims,
        "threshold": alarm.get("Threshold"),
        "description": alarm.get("AlarmDescription", ""),
        "severity": alarm_severity(name, str(alarm.get("AlarmDescription") or ""), tags, state),
        "origin": "describe_alarms",
    }
    ts = alarm.get("StateTransitionedTimestamp") or alarm.get("StateUpdatedTimestamp") or datetime.now(UTC)
    tenant = dims.get(tenant_dimension) or tags.get(tenant_dimension) or DEFAULT_TENANT
    return CloudWatchEvent(event_type="alarm", source="aws.cloudwatch", detail=detail,
                           timestamp=to_datetime(ts), tenant_id=tenant)


def classify_eventbridge(source: str, detail_type: str) -> str:
    """EventBridge source/detail-type → alarm | lambda_completion | deployment | custom."""
    dt = detail_type.lower()
    if source == "aws.cloudwatch" and "alarm state change" in dt:
        return "alarm"
    if source == "aws.lambda" or "lambda function invocation result" in dt or dt.startswith("lambda "):
        return "lambda_completion"
    if source == "aws.codedeploy" or "deploy" in dt:
        return "deployment"
    return "custom"


def _alarm_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    state = detail.get("state") or {}
    previous = detail.get("previousState") or {}
    config = detail.get("configuration") or {}
    metric_name, dims = None, {}
    for m in config.get("metrics") or []:
        metric = (m.get("metricStat") or {}).get("metric") or {}
        metric_name = metric_name or metric.get("name")
        dims.update({str(k): str(v) for k, v in (metric.get("dimensions") or {}).items()})
    name = str(detail.get("alarmName", ""))
    new_state = str(state.get("value", ""))
    return {
        "alarm_name": name, "old_state": previous.get("value"), "new_state": new_state,
        "reason": state.get("reason", ""), "metric_name": metric_name, "dimensions": dims,
        "description": config.get("description", ""),
        "severity": alarm_severity(name, str(config.get("description") or ""), {}, new_state),
        "origin": "eventbridge",
    }


def eventbridge_event(body: Mapping[str, Any], *, tenant_field: str = "tenant_id") -> CloudWatchEvent:
    """An EventBridge envelope (`source`, `detail-type`, `detail`, `time`) as a CloudWatchEvent.

    Raises KeyError/ValueError on a body that is not an EventBridge envelope (the caller dead-letters it).
    """
    source = str(body["source"])
    detail_type = str(body["detail-type"])
    raw_detail = body.get("detail") or {}
    if not isinstance(raw_detail, dict):
        raise ValueError("EventBridge 'detail' must be an object")
    kind = classify_eventbridge(source, detail_type)
    detail: dict[str, Any] = {**raw_detail, "detail_type": detail_type, "eventbridge_id": body.get("id"),
                              "resources": body.get("resources", []), "account": body.get("account"),
                              "region": body.get("region")}
    if kind == "alarm":
        detail.update(_alarm_detail(raw_detail))
    tenant = raw_detail.get(tenant_field)
    if not tenant and isinstance(detail.get("dimensions"), dict):
        tenant = detail["dimensions"].get(tenant_field)
    if not tenant and kind == "lambda_completion":
        payload = (raw_detail.get("requestPayload") or {}) if isinstance(raw_detail.get("requestPayload"), dict) else {}
        tenant = payload.get(tenant_field)
    ts = body.get("time") or datetime.now(UTC)
    return CloudWatchEvent(event_type=kind, source=source, detail=detail, timestamp=to_datetime(ts),  # type: ignore[arg-type]
                           tenant_id=str(tenant) if tenant else DEFAULT_TENANT)


def unwrap_sqs_body(body: str) -> dict[str, Any]:
    """The EventBridge envelope in an SQS body (also when SNS wrapped it in a Notification)."""
    obj = orjson.loads(body)
    if isinstance(obj, dict) and obj.get("Type") == "Notification" and isinstance(obj.get("Message"), str):
        obj = orjson.loads(obj["Message"])
    if not isinstance(obj, dict):
        raise ValueError("SQS body is not a JSON object")
    return obj
