"""In-memory views of kaizen's state topics, filled record by record and queried per tenant."""

from __future__ import annotations

from collections import Counter, deque
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from streams import topics as t
from streams.commands import Command, parse_command
from streams.improvement_events import parse_improvement_event
from streams.records import (
    TERMINAL_STATUSES,
    AuditRecord,
    CycleReport,
    ImprovementEvent,
    ImprovementExecution,
    ImprovementOpportunity,
    StatusReport,
    TelemetryInsight,
)

PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
RISK_RANK = {"low": 0, "medium": 1, "high": 2}
MAX_INSIGHTS = 20_000
MAX_HEALING = 2_000
MAX_RECENT = 500

StateTopics: tuple[str, ...] = (
    t.OPPORTUNITIES, t.IMPROVEMENT_STATE, t.IMPROVEMENT_EVENTS, t.INSIGHTS, t.STATUS, t.CYCLE_REPORTS,
    t.SERIES, t.PATTERNS, t.HEALING, t.COMMANDS, t.AUDIT, t.REGISTRY,
)


def opportunity_rank_key(o: ImprovementOpportunity) -> tuple[Any, ...]:
    """Prioritisation (docs/formulas.md): critical severity first, impact score desc, lower risk, higher confidence."""
    return (0 if o.severity == "critical" else 1, -o.impact_score, RISK_RANK.get(o.risk_level, 1),
            -o.confidence_score, o.opportunity_id)


def execution_tenants(ex: ImprovementExecution) -> list[str | None]:
    tenants: list[str | None] = [ex.tenant_id or None]
    if ex.opportunity is not None:
        tenants.append(ex.opportunity.tenant_id)
        if ex.opportunity.scope == "system":
            tenants.append(None)
    return tenants


class Views:
    """The materialised state: one writer (the read model's consumer), many readers (tools, /api)."""

    def __init__(self) -> None:
        self.opportunities: dict[str, ImprovementOpportunity] = {}
        self._ranking: list[ImprovementOpportunity] | None = None  # all opportunities ranked; None = stale
        self._ranking_by_tenant: dict[str, list[ImprovementOpportunity]] = {}
        self.improvements: dict[str, ImprovementExecution] = {}
        self.timelines: dict[str, dict[str, ImprovementEvent]] = {}
        self.insights: deque[TelemetryInsight] = deque(maxlen=MAX_INSIGHTS)
        self._insight_ids: set[str] = set()
        self.status: dict[str, StatusReport] = {}
        self.reports: dict[str, CycleReport] = {}
        self.series: dict[str, dict[str, Any]] = {}
        self.patterns: dict[str, dict[str, Any]] = {}
        self.healing: deque[dict[str, Any]] = deque(maxlen=MAX_HEALING)
        self.registry: dict[str, dict[str, Any]] = {}
        self.commands: deque[Command] = deque(maxlen=MAX_RECENT)
        self.command_counts: Counter[str] = Counter()
        self.audit_counts: Counter[str] = Counter()
        self.component_generations_ok = 0
        self.insights_total = 0
        self.records_applied = 0
        self.decode_errors: Counter[str] = Counter()
        self.last_decode_error = ""

    # ------------------------------------------------------------------ writing
    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Apply one Kafka record; a bad one is counted (per topic) and skipped, never fatal."""
        k = key.decode("utf-8", "replace") if key is not None else None
        try:
            self._apply(topic, k, value)
            self.records_applied += 1
        except (ValidationError, orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            self.decode_errors[topic] += 1
            self.last_decode_error = f"{topic} key={k}: {str(exc)[:300]}"

    def _apply(self, topic: str, key: str | None, value: bytes | None) -> None:
        compacted: dict[str, dict[str, Any]] = {t.SERIES: self.series, t.PATTERNS: self.patterns,
                                                t.REGISTRY: self.registry}
        if value is None:  # tombstone of a compacted topic
            view = topic_view(topic, self)
            if view is not None and key is not None:
                view.pop(key, None)
                self._ranking = None
            return
        if topic == t.OPPORTUNITIES:
            o = ImprovementOpportunity.from_bytes(value)
            self.opportunities[key or o.opportunity_id] = o
            self._ranking = None
        elif topic == t.IMPROVEMENT_STATE:
            ex = ImprovementExecution.from_bytes(value)
            self.improvements[key or ex.improvement_id] = ex
            for ev in ex.history:
                self.timelines.setdefault(ex.improvement_id, {}).setdefault(ev.event_id, ev)
        elif topic == t.IMPROVEMENT_EVENTS:
            ev = parse_improvement_event(value)  # a malformed event is counted as a decode error
            self.timelines.setdefault(ev.improvement_id, {}).setdefault(ev.event_id, ev)  # a re-send is a duplicate
        elif topic == t.INSIGHTS:
            ins = TelemetryInsight.from_bytes(value)
            if ins.insight_id not in self._insight_ids:
                if len(self.insights) == self.insights.maxlen:
                    self._insight_ids.discard(self.insights[0].insight_id)
                self.insights.append(ins)
                self._insight_ids.add(ins.insight_id)
                self.insights_total += 1
        elif topic == t.STATUS:
            st = StatusReport.from_bytes(value)
            self.status[key or st.process_id] = st
        elif topic == t.CYCLE_REPORTS:
            rep = CycleReport.from_bytes(value)
            self.reports[rep.cycle_id] = rep
        elif topic in compacted:
            obj = orjson.loads(value)
            if not isinstance(obj, dict):
                raise ValueError("state value must be a JSON object")
            compacted[topic][key or str(obj.get("series") or obj.get("pattern_id") or obj.get("agent_id"))] = obj
        elif topic == t.HEALING:
            obj = orjson.loads(value)
            if not isinstance(obj, dict):
                raise ValueError("healing value must be a JSON object")
            self.healing.append(obj)
        elif topic == t.COMMANDS:
            cmd = parse_command(value)
            self.commands.append(cmd)
            self.command_counts[cmd.kind] += 1
        elif topic == t.AUDIT:
            rec = AuditRecord.from_bytes(value)
            self.audit_counts[rec.action] += 1
            if rec.action == "code_generation":  # a component generated by a worker (one LLM generation)
                self.component_generations_ok += bool(rec.detail.get("ok"))

    # ------------------------------------------------------------------ reading
    def execution(self, improvement_id: str) -> ImprovementExecution | None:
        """The folded state, or (when only events were seen so far) a minimal fold of the timeline."""
        ex = self.improvements.get(improvement_id)
        if ex is not None:
            return ex
        events = self.timeline(improvement_id)
        if not events:
            return None
        last = events[-1]
        return ImprovementExecution(improvement_id=improvement_id, status=last.status, cycle_id=last.cycle_id,
                                    tenant_id=next((e.tenant_id for e in events if e.tenant_id), ""),
                                    created_at=events[0].timestamp, updated_at=last.timestamp,
                                    history=events, last_event_id=last.event_id)

    def timeline(self, improvement_id: str) -> list[ImprovementEvent]:
        return sorted(self.timelines.get(improvement_id, {}).values(), key=lambda e: (e.timestamp, e.event_id))

    def code_generations(self) -> tuple[int, int]:
        """(LLM generations, those whose code passed validation): improvements whose plan needed generated
        code (their event carries `generation`) plus components generated on request. Plans made by the
        offline playbooks generate nothing and are not counted."""
        total = self.audit_counts["code_generation"]
        ok = self.component_generations_ok
        for events in self.timelines.values():
            gen = next((e.data["generation"] for e in events.values() if isinstance(e.data.get("generation"), dict)),
                       None)
            if gen is not None:
                total += 1
                ok += bool(gen.get("ok"))
        return total, ok

    def all_improvement_ids(self) -> set[str]:
        return set(self.improvements) | set(self.timelines)

    def ranking(self, tenant_id: str | None = None) -> list[ImprovementOpportunity]:
        """Every opportunity (or one tenant's) in rank order, sorted once per change of the opportunities
        rather than per call: with 10,000 opportunities a sort costs ~20 ms here, more than the rest of
        a tool call."""
        if self._ranking is None:
            self._ranking = sorted(self.opportunities.values(), key=opportunity_rank_key)
            by_tenant: dict[str, list[ImprovementOpportunity]] = {}
            for o in self._ranking:
                by_tenant.setdefault(o.tenant_id, []).append(o)
            self._ranking_by_tenant = by_tenant
        if tenant_id is None:
            return self._ranking
        return self._ranking_by_tenant.get(tenant_id, [])

    def query_insights(self, *, metric_name: str | None, since: datetime, until: datetime | None = None
                       ) -> list[TelemetryInsight]:
        out = []
        for ins in self.insights:
            if ins.timestamp < since or (until is not None and ins.timestamp > until):
                continue
            if metric_name is not None and ins.metric_name != metric_name:
                continue
            out.append(ins)
        return sorted(out, key=lambda i: i.timestamp, reverse=True)

    def active_improvements(self) -> list[ImprovementExecution]:
        out = []
        for iid in self.all_improvement_ids():
            ex = self.execution(iid)
            if ex is not None and ex.status not in TERMINAL_STATUSES and ex.status not in ("queued", "deferred"):
                out.append(ex)
        return out

    def queued_improvements(self) -> list[ImprovementExecution]:
        return [ex for iid in self.all_improvement_ids() if (ex := self.execution(iid)) and ex.status == "queued"]

    def known_tenants(self) -> set[str]:
        tenants: set[str] = set()
        for o in self.opportunities.values():
            tenants.add(o.tenant_id)
            tenants.update(o.affected_tenants)
        for ex in self.improvements.values():
            if ex.tenant_id:
                tenants.add(ex.tenant_id)
        for ins in self.insights:
            tenants.add(ins.tenant_id)
        for s in self.series.values():
            if s.get("tenant_id"):
                tenants.add(str(s["tenant_id"]))
        return {x for x in tenants if x}


def topic_view(topic: str, views: Views) -> dict[str, Any] | None:
    mapping: dict[str, dict[str, Any]] = {
        t.OPPORTUNITIES: views.opportunities, t.IMPROVEMENT_STATE: views.improvements, t.STATUS: views.status,
        t.SERIES: views.series, t.PATTERNS: views.patterns, t.REGISTRY: views.registry}
    return mapping.get(topic)
