"""Every record kaizen reads or writes: the data models of docs/topics.md, validated at the boundary."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

Severity = Literal["low", "medium", "high", "critical"]
Level = Literal["low", "medium", "high"]
ImprovementStatus = Literal[
    "pending",
    "queued",
    "generating",
    "validating",
    "awaiting_approval",
    "deploying",
    "monitoring",
    "completed",
    "failed",
    "rolled_back",
    "rejected",
    "deferred",
    "rolling_back",  # undoing applied changes, retried until every target is back at its previous value
    "conflict",  # paused: a target kaizen wrote was changed by someone else and is left as they set it
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "rolled_back", "rejected"})


def _canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def derive_event_id(kind: str, parts: Any) -> str:
    """A deterministic event id from a record's content, so a re-send is recognised as a duplicate."""
    return kind[0] + "-" + hashlib.sha1(kind.encode() + _canonical(parts)).hexdigest()[:24]


def utcnow() -> datetime:
    """Wall-clock time at the edges (agents, connectors); pure logic gets time passed in."""
    return datetime.now(UTC)


class Record(BaseModel):
    """Base of all wire records: JSON via orjson, unknown fields kept out."""

    model_config = ConfigDict(extra="ignore", frozen=False)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Any:
        return cls.model_validate_json(data)


# --------------------------------------------------------------------------------------------
# Telemetry data model (docs/topics.md) — what producers write to telemetry.*.raw
# --------------------------------------------------------------------------------------------


class MetricDataPoint(Record):
    """One CloudWatch metric value (statistic already applied) of one series at one time."""

    metric_name: str = Field(min_length=1)
    value: float = Field(allow_inf_nan=False)  # "NaN", "inf", "1e400" as strings too
    unit: str = "None"
    dimensions: dict[str, str] = {}
    timestamp: datetime
    tenant_id: str = Field(min_length=1)
    namespace: str = ""
    statistic: str = "Average"
    event_id: str = ""
    # Read back when its series was first discovered (the metrics connector): scoring learns it, no insight.
    history: bool = False

    @model_validator(mode="after")
    def _ensure_event_id(self) -> MetricDataPoint:
        if not self.event_id:
            self.event_id = metric_event_id(self.series_key(), self.timestamp.timestamp(), self.value)
        return self

    def series_key(self) -> str:
        """The series identity: tenant, namespace, metric, statistic and dimensions."""
        return metric_series_key(self.tenant_id, self.namespace, self.metric_name, self.statistic, self.dimensions)

    def component(self) -> str:
        """The affected component: a service/function dimension if present, else the namespace."""
        return metric_component(self.dimensions, self.namespace, self.metric_name)


# Shared by the model above and the lean metric path (streams/metric_codec.py): one definition, so
# both give the same series, component and event id for the same point.
COMPONENT_DIMENSIONS = ("component", "service", "ServiceName", "FunctionName", "function", "agent_id")


def metric_series_key(tenant_id: str, namespace: str, metric_name: str, statistic: str,
                      dimensions: dict[str, str]) -> str:
    if len(dimensions) == 1:  # the usual case, without sorting
        for k, v in dimensions.items():
            return f"{tenant_id}|{namespace}|{metric_name}|{statistic}|{k}={v}"
    dims = ",".join([f"{k}={dimensions[k]}" for k in sorted(dimensions)])
    return f"{tenant_id}|{namespace}|{metric_name}|{statistic}|{dims}"


def metric_component(dimensions: dict[str, str], namespace: str, metric_name: str) -> str:
    for key in COMPONENT_DIMENSIONS:
        if key in dimensions:
            return dimensions[key]
    return namespace or metric_name


def metric_event_id(series_key: str, timestamp: float, value: float) -> str:
    """A point's deterministic id: its series, time (epoch s) and value, so a re-send is a duplicate."""
    return "m-" + hashlib.blake2b(f"{series_key}|{float(timestamp)!r}|{float(value)!r}".encode(),
                                  digest_size=12).hexdigest()


class LogEvent(Record):
    """One log line of a CloudWatch log group."""

    log_group: str = Field(min_length=1)
    log_stream: str = ""
    message: str
    timestamp: datetime
    fields: dict[str, Any] = {}
    tenant_id: str = Field(min_length=1)
    severity: str = "INFO"
    event_id: str = ""

    @model_validator(mode="after")
    def _ensure_event_id(self) -> LogEvent:
        if not self.event_id:
            self.event_id = derive_event_id(
                "log", [self.tenant_id, self.log_group, self.log_stream, self.timestamp.timestamp(), self.message]
            )
        return self

    def component(self) -> str:
        for key in ("component", "service", "function"):
            if isinstance(self.fields.get(key), str):
                return str(self.fields[key])
        return self.log_group.rsplit("/", 1)[-1] or self.log_group


class CloudWatchEvent(Record):
    """An alarm transition, Lambda completion, deployment or custom EventBridge event."""

    event_type: Literal["alarm", "lambda_completion", "deployment", "custom"]
    source: str = Field(min_length=1)
    detail: dict[str, Any] = {}
    timestamp: datetime
    tenant_id: str = Field(min_length=1)
    event_id: str = ""

    @model_validator(mode="after")
    def _ensure_event_id(self) -> CloudWatchEvent:
        if not self.event_id:
            self.event_id = derive_event_id(
                "event", [self.tenant_id, self.event_type, self.source, self.timestamp.timestamp(), self.detail]
            )
        return self


TelemetryKind = Literal["metric", "log", "event"]
TELEMETRY_MODELS: dict[str, type[Record]] = {
    "metric": MetricDataPoint,
    "log": LogEvent,
    "event": CloudWatchEvent,
}


class DeadLetter(Record):
    """A record that could not be processed, with the reason and the original bytes."""

    reason: str
    error: str = ""
    source_topic: str
    partition: int = -1
    offset: int = -1
    index_in_batch: int | None = None
    original: str  # the original bytes, decoded as UTF-8 with backslash escapes for invalid bytes
    original_size: int = -1  # its full length in characters when it was cut to fit (see streams/contract.py)
    original_truncated: bool = False
    timestamp: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------------------------
# Analysis: insights and opportunities (docs/formulas.md)
# --------------------------------------------------------------------------------------------


class TelemetryInsight(Record):
    """An analysed finding: an anomaly, a trend, an error pattern or an event."""

    insight_id: str = ""
    insight_type: str  # performance_degradation, anomaly, error_pattern, optimization_opportunity, alarm, ...
    severity: Severity
    affected_component: str
    affected_tenants: list[str]
    metrics: dict[str, float] = {}
    description: str
    recommended_action: str = ""
    confidence_score: float = Field(ge=0.0, le=1.0)
    timestamp: datetime
    tenant_id: str
    source: str = ""  # scoring | trends | patterns | events | execution_metrics
    metric_name: str | None = None
    problem_type: str = ""  # latency, error_rate, utilization, throughput, error_pattern, cache, ...
    evidence: dict[str, Any] = {}

    @model_validator(mode="after")
    def _ensure_id(self) -> TelemetryInsight:
        if not self.insight_id:
            self.insight_id = derive_event_id(
                "insight",
                [self.tenant_id, self.insight_type, self.affected_component, self.problem_type,
                 self.metric_name, self.timestamp.timestamp()],
            )
        return self


class ImprovementOpportunity(Record):
    """A ranked, deduplicated improvement opportunity: one per (tenant, component, problem type)."""

    opportunity_id: str
    title: str
    description: str
    impact_score: float = 0.0
    priority: Literal["critical", "high", "medium", "low"] = "low"
    effort_estimate: Level = "medium"
    risk_level: Level = "medium"
    severity: Severity = "medium"
    confidence_score: float = 0.5
    affected_components: list[str] = []
    affected_tenants: list[str] = []
    tenant_id: str
    problem_type: str
    change_type: str = "configuration"  # configuration | code | routing | caching | ...
    scope: Literal["tenant", "system"] = "tenant"
    requires_approval: bool = False
    telemetry_evidence: list[TelemetryInsight] = []
    proposed_changes: dict[str, Any] = {}
    performance_gain_percentage: float = 0.0
    affected_users_per_hour: float = 0.0
    frequency_per_day: float = 0.0
    occurrences: int = 0
    first_seen: datetime
    last_seen: datetime
    status: Literal["open", "in_progress", "resolved", "closed"] = "open"
    outcome_adjustment: float = 1.0  # learned from outcomes of similar improvements


class ImprovementEvent(Record):
    """One state change of an improvement; the ImprovementExecution is the fold of these."""

    event_id: str
    improvement_id: str
    status: ImprovementStatus
    timestamp: datetime
    actor: str = "kaizen"
    reason: str = ""
    cycle_id: str | None = None
    tenant_id: str = ""
    data: dict[str, Any] = {}


class ImprovementExecution(Record):
    """The improvement-tracking model (docs/improvement-cycle.md), folded from improvements.events."""

    improvement_id: str
    opportunity: ImprovementOpportunity | None = None
    status: ImprovementStatus = "pending"
    cycle_id: str | None = None
    tenant_id: str = ""
    requested_by: str = "kaizen"
    plan: dict[str, Any] = {}
    generated_code: dict[str, str] = {}
    validation: dict[str, Any] = {}
    deployment: dict[str, Any] = {}
    deployment_time: datetime | None = None
    baseline: dict[str, float] = {}
    monitoring_metrics: dict[str, list[float]] = {}
    verdict: str | None = None
    degradation: float | None = None
    rollback_triggered: bool = False
    completion_time: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    history: list[ImprovementEvent] = []
    last_event_id: str = ""


class CycleReport(Record):
    """Phase 6 report of one improvement cycle (improvement-cycle manual 6.3)."""

    cycle_id: str
    kind: Literal["scheduled", "manual", "emergency"]
    start_time: datetime
    end_time: datetime | None = None
    duration_seconds: float | None = None
    tenant_id: str | None = None
    telemetry_analyzed: dict[str, int] = {}
    opportunities_identified: int = 0
    improvements_attempted: int = 0
    improvements_deployed: int = 0
    improvements_rolled_back: int = 0
    total_impact: float = 0.0
    improvements: list[dict[str, Any]] = []


class OpportunityInput(Record):
    """What the opportunities stage needs from elsewhere, sent to every partition of its inputs topic
    (it concerns opportunities of any problem family): users per hour of a component, seen by scoring,
    and an improvement outcome learned for a (problem family, change kind)."""

    kind: Literal["users", "outcome"]
    input_id: str  # idempotency: the same input folded twice counts once
    tenant_id: str
    component: str = ""
    users_per_hour: float = 0.0
    observed_at: float = 0.0  # epoch seconds of the users point: the latest one wins, whatever the order
    problem_type: str = ""
    change_kind: str = ""
    outcome: str = ""


class AuditRecord(Record):
    """Who did what, when: cycles, generation requests, approvals, deployments, rollbacks, MCP calls."""

    audit_id: str
    timestamp: datetime
    actor: str
    action: str
    tenant_id: str | None = None
    target: str | None = None
    detail: dict[str, Any] = {}


class StatusReport(Record):
    """A heartbeat of one kaizen process: worker, connector or MCP server, with its components."""

    process_id: str
    role: Literal["worker", "connector", "mcp", "demo"]
    timestamp: datetime
    healthy: bool = True
    detail: dict[str, Any] = {}


def model_for_kind(kind: str) -> type[Record]:
    return TELEMETRY_MODELS[kind]
