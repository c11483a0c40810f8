"""Every topic name, its key and value record, and its configuration — declared once, never renamed."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams import records as r
from streams.commands import CommandBase


@dataclass(frozen=True)
class TopicSpec:
    """A topic: name, what its key and value are, and whether it is a compacted state topic."""

    name: str
    key: str
    value: type[r.Record] | None
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)


RAW_TOPICS: dict[str, str] = {
    "metric": "telemetry.metrics.raw",
    "log": "telemetry.logs.raw",
    "event": "telemetry.events.raw",
}
CLEAN_TOPICS: dict[str, str] = {
    "metric": "telemetry.metrics",
    "log": "telemetry.logs",
    "event": "telemetry.events",
}
DEADLETTER = "telemetry.deadletter"
INSIGHTS = "insights"
OPPORTUNITIES = "opportunities"
IMPROVEMENT_EVENTS = "improvements.events"
IMPROVEMENT_STATE = "improvements.state"
CYCLE_REPORTS = "cycle.reports"
COMMANDS = "commands"
AUDIT = "audit"
STATUS = "status"
CONFIG = "config.changes"
REGISTRY = "agents.registry"
HEALING = "healing.history"
HEALING_OBSERVATIONS = "healing.observations"  # what the triggers evaluate, keyed so one worker owns a component
EXECUTIONS = "telemetry.executions"  # ExecutionMetrics of monitored skills and of kaizen's own work
PATTERNS = "patterns.state"
SERIES = "series.scores"
EPOCH = "kaizen.epoch"  # offset 0 names the broker's data epoch: a reset is noticed (streams/epoch.py)
OPPORTUNITY_INPUTS = "opportunities.inputs"  # users per hour and learned outcomes, read whole by every worker

_RETENTION = {"retention.ms": "604800000"}  # set explicitly: Tansu's DescribeConfigs shows only set keys
_COMPACT = {"cleanup.policy": "compact", "retention.ms": "-1"}

TOPICS: tuple[TopicSpec, ...] = (
    # metrics: written to the partition owning their series (crc32(series key) % partitions) they are scored in
    # one hop; keyed by tenant they are forwarded once to that partition (docs/throughput.md)
    TopicSpec(RAW_TOPICS["metric"], "tenant_id, or the partition owning the series", r.MetricDataPoint,
              config=_RETENTION),
    TopicSpec(RAW_TOPICS["log"], "tenant_id", r.LogEvent, config=_RETENTION),
    TopicSpec(RAW_TOPICS["event"], "tenant_id", r.CloudWatchEvent, config=_RETENTION),
    # written by metric-path after dedup, one envelope per raw message, header kaizen-hop: scored
    TopicSpec(CLEAN_TOPICS["metric"], "none (the partition owning the series)", r.MetricDataPoint, config=_RETENTION),
    TopicSpec(CLEAN_TOPICS["log"], "tenant_id|log_group", r.LogEvent, config=_RETENTION),
    TopicSpec(CLEAN_TOPICS["event"], "tenant_id", r.CloudWatchEvent, config=_RETENTION),
    TopicSpec(DEADLETTER, "source topic", r.DeadLetter, config=_RETENTION),
    TopicSpec(INSIGHTS, "insight_id", r.TelemetryInsight, config=_RETENTION),
    TopicSpec(OPPORTUNITIES, "opportunity_id", r.ImprovementOpportunity, compacted=True, config=_COMPACT),
    TopicSpec(IMPROVEMENT_EVENTS, "improvement_id", r.ImprovementEvent, config=_RETENTION),
    TopicSpec(IMPROVEMENT_STATE, "improvement_id", r.ImprovementExecution, compacted=True, config=_COMPACT),
    TopicSpec(CYCLE_REPORTS, "cycle_id", r.CycleReport, config=_RETENTION),
    # a union of CommandBase subclasses on `kind` (streams/commands.py)
    TopicSpec(COMMANDS, "tenant_id or improvement_id", CommandBase, config=_RETENTION),
    TopicSpec(AUDIT, "audit_id", r.AuditRecord, config=_RETENTION),
    TopicSpec(STATUS, "process_id", r.StatusReport, compacted=True, config=_COMPACT),
    TopicSpec(CONFIG, "tenant_id/parameter", None, compacted=True, config=_COMPACT),
    TopicSpec(REGISTRY, "agent_id", None, compacted=True, config=_COMPACT),
    TopicSpec(HEALING, "firing_id", None, config=_RETENTION),
    # values: agents/healing/logic/healing.py Observation and agents/healing/logic/execution_metrics.py
    # ExecutionMetrics (JSON); both keyed tenant_id|component so cooldowns have one owner (docs/healing.md)
    TopicSpec(HEALING_OBSERVATIONS, "tenant_id|component", None, config=_RETENTION),
    TopicSpec(EXECUTIONS, "tenant_id|skill_name", None, config=_RETENTION),
    TopicSpec(PATTERNS, "pattern_id", None, compacted=True, config=_COMPACT),
    TopicSpec(SERIES, "series key", None, compacted=True, config=_COMPACT),
    TopicSpec(EPOCH, "epoch", None, config={"retention.ms": "-1"}),  # kept forever: only a reset loses it
    # every worker reads all of it (the context of any opportunity); kept: the context is rebuilt from it
    TopicSpec(OPPORTUNITY_INPUTS, "tenant_id|component or tenant_id|problem_type", r.OpportunityInput,
              config={"retention.ms": "-1"}),
)
TOPIC_NAMES: frozenset[str] = frozenset(t.name for t in TOPICS)
