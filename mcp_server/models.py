"""Typed outputs of the MCP tools and /api endpoints (pydantic, so clients get a JSON schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from streams.records import (
    CycleReport,
    ImprovementEvent,
    ImprovementExecution,
    ImprovementOpportunity,
    TelemetryInsight,
)


class CycleTriggerResult(BaseModel):
    """What trigger_improvement_cycle returns: the accepted command and the cycle's first events if seen."""

    command_id: str
    cycle_id: str
    status: Literal["accepted", "started", "reported"]
    tenant_id: str | None
    analysis_window_hours: int
    max_improvements: int
    events: list[ImprovementEvent] = []
    report: CycleReport | None = None
    message: str = ""


class ComponentRequestResult(BaseModel):
    command_id: str
    status: Literal["accepted"]
    component_type: str
    requested_by: str
    tenant_id: str | None = None
    message: str = ""


class ProcessHealth(BaseModel):
    process_id: str
    role: str
    healthy: bool
    stale: bool
    last_seen: datetime
    age_seconds: float
    breakers: dict[str, str] = {}
    detail: dict[str, Any] = {}


class BrokerHealth(BaseModel):
    reachable: bool
    bootstrap: str
    loaded: bool
    load_seconds: float | None
    records_applied: int
    decode_errors: dict[str, int] = {}
    last_error: str = ""
    resets: list[dict[str, Any]] = []  # the broker came back empty / topics vanished (streams/epoch.py)
    last_reset: str | None = None


class SelfBuildingMetrics(BaseModel):
    """The self-building metrics, computed from the state topics."""

    improvement_cycles_started: int = 0
    improvement_cycles_completed: int = 0
    improvements_deployed: int = 0
    improvements_rolled_back: int = 0
    code_generation_requests: int = 0
    code_generation_success_rate: float | None = None
    telemetry_events_processed: int = 0
    insights_generated: int = 0
    cloudwatch_api_calls: int = 0
    circuit_breaker_opens: int = 0


class ImprovementSummary(BaseModel):
    improvement_id: str
    status: str
    tenant_id: str
    cycle_id: str | None = None
    title: str = ""
    verdict: str | None = None
    degradation: float | None = None
    rollback_triggered: bool = False
    requires_approval: bool = False
    requested_by: str = ""
    updated_at: datetime | None = None

    @classmethod
    def of(cls, ex: ImprovementExecution) -> ImprovementSummary:
        opp = ex.opportunity
        return cls(improvement_id=ex.improvement_id, status=ex.status,
                   tenant_id=ex.tenant_id or (opp.tenant_id if opp else ""), cycle_id=ex.cycle_id,
                   title=opp.title if opp else "", verdict=ex.verdict, degradation=ex.degradation,
                   rollback_triggered=ex.rollback_triggered or ex.status == "rolled_back",
                   requires_approval=bool(opp and opp.requires_approval), requested_by=ex.requested_by,
                   updated_at=ex.updated_at or (ex.history[-1].timestamp if ex.history else None))


class SystemStatus(BaseModel):
    healthy: bool
    timestamp: datetime
    broker: BrokerHealth
    workers: list[ProcessHealth]
    connectors: list[ProcessHealth]
    breakers: dict[str, str]
    active_improvements: list[ImprovementSummary]
    queue: list[ImprovementSummary]
    max_concurrent_improvements: int
    evolution_level: int
    metrics: SelfBuildingMetrics
    feature_flags: dict[str, bool]


class InsightsResult(BaseModel):
    metric_name: str | None
    time_range_hours: int
    tenant_id: str | None
    count: int
    by_type: dict[str, int]
    by_severity: dict[str, int]
    recommendations: list[str]
    insights: list[TelemetryInsight]


class OpportunityList(BaseModel):
    count: int
    opportunities: list[ImprovementOpportunity]


class ImprovementDetail(BaseModel):
    improvement: ImprovementExecution
    timeline: list[ImprovementEvent]


class ImprovementList(BaseModel):
    count: int
    improvements: list[ImprovementSummary]


class DecisionResult(BaseModel):
    command_id: str
    improvement_id: str
    decision: Literal["approve", "reject", "defer", "resolve_conflict"]
    status: Literal["accepted"]
    actor: str
    reason: str = ""
    action: Literal["retry_rollback", "keep_current"] | None = None  # resolve_conflict only
