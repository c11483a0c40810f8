"""The demo scenarios (service, fault, how the cycle starts, expected verdict) and the timeline each one reaches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from kaizen.demo.workload.service import Faults, ServiceProfile
from streams import topics as t

ALL = "all"
VERDICT_STATUSES = {"completed": "keep", "rolled_back": "rollback"}
WINDOW = timedelta(seconds=10)  # latency figures are means over this window


@dataclass(frozen=True)
class AlarmSpec:
    """A CloudWatch alarm the service owns, evaluated by the workload the way CloudWatch would."""

    name: str
    metric_name: str
    threshold: float
    evaluation_periods: int = 3


@dataclass(frozen=True)
class Scenario:
    name: str
    profile: ServiceProfile
    fault: Faults
    fault_label: str
    trigger: Literal["manual", "alarm"]
    expected_verdict: Literal["keep", "rollback"]
    description: str
    alarm: AlarmSpec | None = None
    seed: int = 0
    focus_problem: str | None = None  # steer the manual cycle to this opportunity family of the component


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "latency-regression",
        ServiceProfile("acme", "checkout", base_rps=200, working_set=800, hit_ms=8, db_ms=60, contention_knee=400),
        Faults(working_set_factor=4.0), "working set grew 4x: the cache is too small",
        "manual", "keep",
        "checkout latency rises when its working set outgrows the cache; doubling the cache brings it down",
        seed=11,
    ),
    Scenario(
        "bad-change",
        ServiceProfile("globex", "search", base_rps=150, working_set=20_000, hit_ms=10, db_ms=80,
                       contention_knee=80, contention_k=0.4),
        Faults(db_slowdown=1.6), "a dropped index slows the database 1.6x",
        "manual", "rollback",
        "search is database-bound: the latency playbook's larger pool and concurrency pass the contention "
        "point and make latency worse, so monitoring rolls the change back",
        seed=23,
    ),
    Scenario(
        "error-burst",
        ServiceProfile("initech", "billing", base_rps=100, working_set=500, hit_ms=12, db_ms=40,
                       db_every_request=True, connections_needed=7),
        Faults(leaked_connections=6.0), "a connection leak exhausts the database pool",
        "manual", "keep",
        "recurring 'connection pool exhausted' errors become a pattern, then a database_connection "
        "opportunity; a larger pool ends them",
        seed=37, focus_problem="database_connection",
    ),
    Scenario(
        "alarm",
        ServiceProfile("umbrella", "payments", base_rps=120, working_set=600, hit_ms=6, db_ms=50),
        Faults(working_set_factor=5.0), "a cache-busting traffic mix: working set 5x",
        "alarm", "keep",
        "payments latency crosses its critical alarm; the ALARM transition starts an emergency cycle",
        alarm=AlarmSpec("umbrella-payments-critical-latency", "Latency", threshold=30.0, evaluation_periods=10),
        seed=41,
    ),
)}


def select(name: str) -> list[Scenario]:
    """The scenarios named (a name or 'all'); ValueError with the valid names otherwise."""
    if name == ALL:
        return list(SCENARIOS.values())
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)} or {ALL}")
    return [SCENARIOS[name]]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _mean(xs: Iterable[float]) -> float | None:
    values = list(xs)
    return round(sum(values) / len(values), 2) if values else None


@dataclass
class Timeline:
    """What happened to one scenario, in order; the JSON report is this, per scenario."""

    scenario: str
    tenant_id: str
    component: str
    expected_verdict: str
    stage: str = "warming up"
    fault_injected_at: datetime | None = None
    first_anomaly_at: datetime | None = None
    first_anomaly: str = ""
    opportunity_at: datetime | None = None
    opportunity: str = ""
    cycle_triggered_at: datetime | None = None
    improvement_id: str | None = None
    improvement_status: str | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    approval_at: datetime | None = None
    approval: str | None = None
    deployed_at: datetime | None = None
    full_deployed_at: datetime | None = None
    verdict_at: datetime | None = None
    verdict: str | None = None
    degradation: float | None = None
    verdict_reason: str = ""
    baseline: dict[str, float] = field(default_factory=dict)  # the cycle's pre-deploy baseline
    rollback_at: datetime | None = None
    done_at: datetime | None = None
    error: str | None = None
    opportunities: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest of each, by id
    latency: list[tuple[datetime, float]] = field(default_factory=list)
    canary_latency: list[tuple[datetime, float]] = field(default_factory=list)
    error_rate: list[tuple[datetime, float]] = field(default_factory=list)  # percent
    telemetry_lag: list[float] = field(default_factory=list)  # seconds from metric time to telemetry.metrics

    def reached_verdict(self) -> bool:
        return self.verdict is not None

    def _latency_between(self, start: datetime | None, end: datetime | None,
                         series: list[tuple[datetime, float]] | None = None) -> float | None:
        if start is None or end is None:
            return None
        return _mean(v for ts, v in (self.latency if series is None else series) if start <= ts < end)

    def figures(self) -> dict[str, float | None]:
        """Mean latency (and error rate) healthy (before the fault), before the change, while fully deployed, and after the verdict."""
        before_end = self.deployed_at or self.verdict_at
        last = self.latency[-1][0] + timedelta(seconds=1) if self.latency else None
        after_start = max(self.verdict_at, last - WINDOW) if self.verdict_at and last else None
        healthy = self._latency_between(self.fault_injected_at - WINDOW, self.fault_injected_at) \
            if self.fault_injected_at else None
        before = self._latency_between(before_end - WINDOW, before_end) if before_end else None
        during = self._latency_between(self.full_deployed_at, self.verdict_at)
        after = self._latency_between(after_start, last)
        change = round((after - before) / before * 100, 1) if after is not None and before else None
        canary = _mean(v for _ts, v in self.canary_latency)
        err_before = self._latency_between(before_end - WINDOW, before_end, self.error_rate) if before_end else None
        err_after = self._latency_between(after_start, last, self.error_rate)
        return {"latency_healthy_ms": healthy, "latency_before_ms": before, "latency_canary_ms": canary,
                "latency_during_change_ms": during, "latency_after_ms": after, "latency_change_pct": change,
                "error_rate_before_pct": err_before, "error_rate_after_pct": err_after}

    def as_report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k in ("latency", "canary_latency", "error_rate", "telemetry_lag"):
                continue
            if k == "opportunities":
                v = list(self.opportunities.values())
            out[k] = _iso(v) if isinstance(v, datetime) else v
        out.update(self.figures())
        lags = sorted(self.telemetry_lag)
        out["telemetry_lag_seconds"] = {"p50": round(lags[len(lags) // 2], 2), "max": round(lags[-1], 2),
                                        "points": len(lags)} if lags else None
        out["met_expectation"] = self.verdict == self.expected_verdict if self.verdict else None
        return out


class TimelineTracker:
    """Folds insights, opportunities and improvement events (any order of topics) into each scenario's timeline.

    Only records of a scenario's tenant that arrive after its fault was injected count. Time is passed
    in: each record carries its Kafka timestamp (when the worker published it).
    """

    def __init__(self, scenarios: Iterable[Scenario]) -> None:
        self.timelines: dict[str, Timeline] = {}
        self.by_tenant: dict[str, Timeline] = {}
        for s in scenarios:
            tl = Timeline(s.name, s.profile.tenant_id, s.profile.component, s.expected_verdict)
            self.timelines[s.name] = tl
            self.by_tenant[s.profile.tenant_id] = tl

    def observe(self, topic: str, value: bytes, at: datetime) -> Timeline | None:
        """Fold one record; returns the timeline it changed (None when it was not relevant)."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        tl = self.by_tenant.get(str(data.get("tenant_id", "")))
        if tl is None or tl.fault_injected_at is None or at < tl.fault_injected_at:
            return None
        if topic == t.CLEAN_TOPICS["metric"]:
            return None
        if topic == t.INSIGHTS:
            return self._insight(tl, data, at)
        if topic == t.OPPORTUNITIES:
            return self._opportunity(tl, data, at)
        if topic == t.IMPROVEMENT_EVENTS:
            return self._improvement(tl, data, at)
        return None

    def _insight(self, tl: Timeline, data: dict[str, Any], at: datetime) -> Timeline | None:
        if tl.first_anomaly_at is not None or data.get("insight_type") == "improvement_outcome":
            return None
        tl.first_anomaly_at = at
        tl.first_anomaly = f"{data.get('insight_type')}: {str(data.get('description', ''))[:90]}"
        tl.stage = "anomaly detected"
        return tl

    def _opportunity(self, tl: Timeline, data: dict[str, Any], at: datetime) -> Timeline | None:
        oid = str(data.get("opportunity_id", ""))
        tl.opportunities[oid] = {k: data.get(k) for k in (
            "opportunity_id", "problem_type", "priority", "impact_score", "severity", "status", "occurrences")}
        if tl.opportunity_at is not None or data.get("status", "open") != "open":
            return None
        tl.opportunity_at = at
        tl.opportunity = f"{data.get('priority')} {data.get('problem_type')}: {str(data.get('title', ''))[:70]}"
        if tl.stage in ("warming up", "fault injected", "anomaly detected"):
            tl.stage = "opportunity"
        return tl

    def _improvement(self, tl: Timeline, data: dict[str, Any], at: datetime) -> Timeline | None:
        iid = str(data.get("improvement_id", ""))
        status = str(data.get("status", ""))
        if tl.improvement_id != iid:
            replaceable = tl.improvement_id is None or tl.improvement_status in ("failed", "rejected")
            if not replaceable or tl.verdict is not None:
                return None
            tl.improvement_id = iid
        tl.improvement_status = status
        body = data.get("data") or {}
        tl.stage = status
        if status == "validating" and isinstance(body.get("plan"), dict):
            tl.changes = [c for c in body["plan"].get("changes", []) if isinstance(c, dict)]
        elif status == "awaiting_approval":
            tl.stage = "awaiting approval"
        elif status in ("deploying", "monitoring"):
            if tl.approval_at is None:
                tl.approval_at, tl.approval = at, "automatic (guardrails)"
            tl.deployed_at = tl.deployed_at or at
            stage = (body.get("deployment") or {}).get("stage") if isinstance(body.get("deployment"), dict) else None
            if isinstance(body.get("baseline"), dict) and body["baseline"]:
                tl.baseline = dict(body["baseline"])
            if stage == "full" and tl.full_deployed_at is None:
                tl.full_deployed_at = at
            if stage:
                tl.stage = f"{status} ({stage})"
        elif status in VERDICT_STATUSES:
            tl.verdict_at = at
            tl.verdict = str(body.get("verdict") or VERDICT_STATUSES[status])
            tl.verdict_reason = str(data.get("reason", ""))[:300]
            if isinstance(body.get("degradation"), int | float):
                tl.degradation = float(body["degradation"])
            if status == "rolled_back":
                tl.rollback_at = at
        elif status in ("failed", "rejected"):
            tl.error = f"improvement {iid} {status}: {data.get('reason', '')}"[:200]
        return tl

    def observe_metrics(self, value: bytes, at: datetime) -> None:
        """Ingestion lag of the scenarios' Latency points: their time → the worker publishing them clean."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        items = data.get("records", [data]) if isinstance(data, dict) else []
        for it in items:
            tl = self.by_tenant.get(str(it.get("tenant_id", ""))) if isinstance(it, dict) else None
            if tl is None or it.get("metric_name") != "Latency" or "variant" in (it.get("dimensions") or {}):
                continue
            try:
                ts = datetime.fromisoformat(str(it["timestamp"]).replace("Z", "+00:00"))
            except (KeyError, ValueError):
                continue
            tl.telemetry_lag.append((at - ts).total_seconds())

    def mark_approved(self, scenario: str, at: datetime, who: str) -> None:
        tl = self.timelines[scenario]
        tl.approval_at, tl.approval = at, who

    def report(self) -> dict[str, Any]:
        return {"scenarios": {name: tl.as_report() for name, tl in self.timelines.items()}}


def ts_of(ms: int | None, fallback: datetime) -> datetime:
    """A Kafka record timestamp (ms) as a datetime in the fallback's zone (the fallback when absent)."""
    return datetime.fromtimestamp(ms / 1000.0, fallback.tzinfo) if ms else fallback
