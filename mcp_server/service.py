"""What the MCP tools and /api do, per caller: tenant-filtered queries over the read model, and commands."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Literal

from mcp_server.auth import AuthError, Principal
from mcp_server.models import (
    BrokerHealth,
    ComponentRequestResult,
    CycleTriggerResult,
    DecisionResult,
    ImprovementDetail,
    ImprovementList,
    ImprovementSummary,
    InsightsResult,
    OpportunityList,
    ProcessHealth,
    SelfBuildingMetrics,
    SystemStatus,
)
from mcp_server.publisher import Publisher, new_id
from mcp_server.readmodel import ReadModel
from mcp_server.views import PRIORITY_RANK, Views, execution_tenants, opportunity_rank_key
from streams.commands import (
    COMPONENT_TYPES,
    MAX_WINDOW_HOURS,
    RESOLVE_ACTIONS,
    DecisionKind,
    GenerateComponent,
    ResolveConflict,
    TriggerCycle,
)
from streams.commands import Decision as DecisionCommand
from streams.decisions import DecisionName, refusal
from streams.errors import InputError
from streams.records import TERMINAL_STATUSES, ImprovementExecution, ImprovementOpportunity, utcnow
from streams.settings import Settings

STALE_AFTER_SECONDS = 60.0
RESET_UNHEALTHY_SECONDS = 600.0  # status stays unhealthy this long after a broker reset was noticed
DEPLOYED = {"deploying", "monitoring", "completed", "rolled_back"}


class BadArgument(InputError):
    """An argument the caller must fix; the message says how."""


def _int_detail(detail: dict[str, Any], *names: str) -> int:
    for n in names:
        v = detail.get(n)
        if isinstance(v, int | float):
            return int(v)
    return 0


class KaizenService:
    """The operations behind the tools; every answer is filtered by the caller's tenants."""

    def __init__(self, settings: Settings, readmodel: ReadModel, publisher: Publisher,
                 cycle_wait_seconds: float = 10.0) -> None:
        self.settings = settings
        self.readmodel = readmodel
        self.publisher = publisher
        self.cycle_wait_seconds = cycle_wait_seconds

    @property
    def views(self) -> Views:
        return self.readmodel.views

    # ------------------------------------------------------------------ helpers
    def known_tenants(self) -> set[str]:
        return (self.views.known_tenants() | set(self.settings.cloudwatch_tenant_filter)
                | set(self.settings.tenant_improvement_configs))

    def check_tenant_arg(self, p: Principal, tenant_id: str | None) -> None:
        if tenant_id is None:
            return
        if not tenant_id.strip():
            raise BadArgument("tenant_id must be a non-empty tenant id, or omitted for all your tenants")
        p.check_tenant(tenant_id)
        if tenant_id not in self.known_tenants() and tenant_id not in (p.tenants or ()):
            visible = sorted(x for x in self.known_tenants() if p.can_see(x))
            raise BadArgument(f"unknown tenant '{tenant_id}'; known tenants: {', '.join(visible) or 'none yet'}")

    def visible_execution(self, p: Principal, improvement_id: str) -> ImprovementExecution:
        ex = self.views.execution(improvement_id)
        if ex is None or not p.can_see_any(execution_tenants(ex)):
            raise BadArgument(f"improvement '{improvement_id}' not found (or not accessible with this token); "
                              "list_improvements shows the ids you can use")
        return ex

    def visible_opportunities(self, p: Principal, tenant_id: str | None) -> list[ImprovementOpportunity]:
        return [o for o in self.views.opportunities.values()
                if p.can_see(o.tenant_id) and (tenant_id is None or o.tenant_id == tenant_id)]

    # ------------------------------------------------------------------ queries
    def list_opportunities(self, p: Principal, tenant_id: str | None, limit: int,
                           min_priority: str | None) -> OpportunityList:
        self.check_tenant_arg(p, tenant_id)
        if not 1 <= limit <= 1000:
            raise BadArgument(f"limit must be between 1 and 1000, got {limit}")
        if min_priority is not None and min_priority not in PRIORITY_RANK:
            raise BadArgument(f"min_priority must be one of {list(PRIORITY_RANK)}, got '{min_priority}'")
        # the caller's part of the ranking: all of it, or the ranked lists of its tenants merged in rank order
        if tenant_id is not None:
            parts = [self.views.ranking(tenant_id)]
        elif p.tenants is None:
            parts = [self.views.ranking()]
        else:
            parts = [self.views.ranking(t) for t in sorted(p.tenants)]
        ranked: Iterable[ImprovementOpportunity] = parts[0] if len(parts) == 1 else \
            heapq.merge(*parts, key=opportunity_rank_key)
        if min_priority is None:
            return OpportunityList(count=sum(len(x) for x in parts), opportunities=list(islice(ranked, limit)))
        bound = PRIORITY_RANK[min_priority]
        page: list[ImprovementOpportunity] = []
        count = 0
        for o in ranked:
            if PRIORITY_RANK.get(o.priority, 3) <= bound:
                count += 1
                if len(page) < limit:
                    page.append(o)
        return OpportunityList(count=count, opportunities=page)

    def get_improvement(self, p: Principal, improvement_id: str) -> ImprovementDetail:
        ex = self.visible_execution(p, improvement_id)
        return ImprovementDetail(improvement=ex, timeline=self.views.timeline(improvement_id) or ex.history)

    def list_improvements(self, p: Principal, tenant_id: str | None, status: str | None,
                          limit: int) -> ImprovementList:
        self.check_tenant_arg(p, tenant_id)
        if not 1 <= limit <= 1000:
            raise BadArgument(f"limit must be between 1 and 1000, got {limit}")
        items = []
        for iid in self.views.all_improvement_ids():
            ex = self.views.execution(iid)
            if ex is None or not p.can_see_any(execution_tenants(ex)):
                continue
            s = ImprovementSummary.of(ex)
            if (tenant_id is None or s.tenant_id == tenant_id) and (status is None or s.status == status):
                items.append(s)
        items.sort(key=lambda s: (s.updated_at is None, -(s.updated_at.timestamp() if s.updated_at else 0)))
        return ImprovementList(count=len(items), improvements=items[:limit])

    def query_insights(self, p: Principal, metric_name: str | None, time_range_hours: int,
                       tenant_id: str | None) -> InsightsResult:
        if not 1 <= time_range_hours <= 720:
            raise BadArgument(f"time_range_hours must be between 1 and 720 (30 days), got {time_range_hours}")
        self.check_tenant_arg(p, tenant_id)
        since = utcnow() - timedelta(hours=time_range_hours)
        found = [i for i in self.views.query_insights(metric_name=metric_name, since=since)
                 if p.can_see(i.tenant_id) and (tenant_id is None or i.tenant_id == tenant_id)]
        recs = list(dict.fromkeys(i.recommended_action for i in found if i.recommended_action))[:10]
        return InsightsResult(metric_name=metric_name, time_range_hours=time_range_hours, tenant_id=tenant_id,
                              count=len(found), by_type=dict(Counter(i.insight_type for i in found)),
                              by_severity=dict(Counter(i.severity for i in found)), recommendations=recs,
                              insights=found[:200])

    def metrics(self) -> SelfBuildingMetrics:
        v = self.views
        cycles = set(v.reports) | {c.command_id for c in v.commands if c.kind == "trigger_cycle"}
        deployed = rolled = 0
        for iid in v.all_improvement_ids():
            seen = {e.status for e in v.timeline(iid)}
            ex = v.execution(iid)
            if ex is not None:
                seen.add(ex.status)
                if ex.cycle_id:
                    cycles.add(ex.cycle_id)
            deployed += bool(seen & DEPLOYED)
            rolled += "rolled_back" in seen or bool(ex and ex.rollback_triggered)
        generations, generated_ok = v.code_generations()  # LLM generations only (see views.py)
        m = SelfBuildingMetrics(
            improvement_cycles_started=len(cycles),
            improvement_cycles_completed=sum(1 for r in v.reports.values() if r.end_time is not None),
            improvements_deployed=deployed, improvements_rolled_back=rolled,
            code_generation_requests=generations,
            code_generation_success_rate=round(generated_ok / generations, 4) if generations else None,
            insights_generated=v.insights_total,
        )
        for st in v.status.values():
            m.telemetry_events_processed += _int_detail(st.detail, "telemetry_events_processed", "events_processed")
            m.cloudwatch_api_calls += _int_detail(st.detail, "cloudwatch_api_calls")
            m.circuit_breaker_opens += _int_detail(st.detail, "circuit_breaker_opens", "breaker_opens")
        return m

    def system_status(self, p: Principal) -> SystemStatus:
        now = utcnow()
        rm = self.readmodel
        workers: list[ProcessHealth] = []
        connectors: list[ProcessHealth] = []
        breakers: dict[str, str] = {}
        for st in sorted(self.views.status.values(), key=lambda s: s.process_id):
            age = max(0.0, (now - st.timestamp).total_seconds())
            raw = st.detail.get("breakers", {})
            pb = {str(k): str(val.get("state") if isinstance(val, dict) else val)
                  for k, val in (raw.items() if isinstance(raw, dict) else [])}
            breakers.update({f"{st.process_id}/{k}": s for k, s in pb.items()})
            ph = ProcessHealth(process_id=st.process_id, role=st.role, healthy=st.healthy and age < STALE_AFTER_SECONDS,
                               stale=age >= STALE_AFTER_SECONDS, last_seen=st.timestamp, age_seconds=round(age, 1),
                               breakers=pb, detail=st.detail)
            if st.role in ("worker", "connector"):  # the MCP server and the demo report too: not workers
                (connectors if st.role == "connector" else workers).append(ph)
        active = [ImprovementSummary.of(x) for x in self.views.active_improvements()
                  if p.can_see_any(execution_tenants(x))]
        queue = [ImprovementSummary.of(x) for x in self.views.queued_improvements()
                 if p.can_see_any(execution_tenants(x))]
        m = self.metrics()
        kept = max(0, m.improvements_deployed - m.improvements_rolled_back - len(active))
        broker = BrokerHealth(reachable=rm.broker_reachable, bootstrap=rm.bootstrap, loaded=rm.loaded.is_set(),
                              load_seconds=rm.load_seconds, records_applied=self.views.records_applied,
                              decode_errors=dict(self.views.decode_errors), last_error=rm.last_error,
                              resets=rm.resets, last_reset=rm.resets[-1]["at"] if rm.resets else None)
        # A worker's reset report counts as much as the read model's own (whoever noticed first).
        worker_resets = [r for w in workers for r in w.detail.get("broker_resets", []) if isinstance(r, dict)]
        recent_reset = any(now - datetime.fromisoformat(str(r.get("at"))) < timedelta(seconds=RESET_UNHEALTHY_SECONDS)
                           for r in [*broker.resets, *worker_resets] if r.get("at"))
        s = self.settings
        healthy = (broker.reachable and all(w.healthy for w in workers + connectors) and "open" not in breakers.values()
                   and not recent_reset)
        return SystemStatus(
            healthy=healthy, timestamp=now, broker=broker, workers=workers, connectors=connectors, breakers=breakers,
            active_improvements=active, queue=queue, max_concurrent_improvements=s.max_concurrent_improvements,
            evolution_level=1 + int(math.log2(1 + kept)), metrics=m,
            feature_flags={"enable_self_building": s.enable_self_building,
                           "enable_cloudwatch_streaming": s.enable_cloudwatch_streaming,
                           "enable_autonomous_improvements": s.enable_autonomous_improvements,
                           "enable_component_generation": s.enable_component_generation,
                           "enable_improvement_rollback": s.enable_improvement_rollback})

    # ------------------------------------------------------------------ commands
    async def trigger_cycle(self, p: Principal, analysis_window_hours: int, max_improvements: int | None,
                            tenant_id: str | None, component: str | None = None,
                            problem_type: str | None = None) -> CycleTriggerResult:
        if not 1 <= analysis_window_hours <= MAX_WINDOW_HOURS:
            raise BadArgument(f"analysis_window_hours must be between 1 and {MAX_WINDOW_HOURS}, "
                              f"got {analysis_window_hours}")
        top = self.settings.max_concurrent_improvements
        max_improvements = top if max_improvements is None else max_improvements
        if not 1 <= max_improvements <= top:
            raise BadArgument(f"max_improvements must be between 1 and {top} (MAX_CONCURRENT_IMPROVEMENTS), "
                              f"got {max_improvements}")
        if not self.settings.enable_self_building:
            raise BadArgument("self-building is disabled (ENABLE_SELF_BUILDING=false); enable it to run cycles")
        p.require_role("operator", action="trigger an improvement cycle")
        tenant_id = tenant_id if tenant_id is not None else p.default_tenant()
        self.check_tenant_arg(p, tenant_id)
        if tenant_id is None:
            if not p.all_tenants:
                raise BadArgument("this token covers several tenants: name the tenant_id to run the cycle for")
            p.require_role("approver", action="trigger a system-wide cycle (all tenants)")
        cid = new_id("cycle")
        cmd = TriggerCycle(command_id=cid, timestamp=utcnow(), actor=p.name, roles=sorted(p.roles),
                           tenant_id=tenant_id, cycle_id=cid, cycle_kind="manual",
                           analysis_window_hours=analysis_window_hours, max_improvements=max_improvements,
                           component=component or None, problem_type=problem_type or None)
        await self.publisher.command(cmd)

        def first_events(v: Views) -> Any:
            if cid in v.reports:
                return True
            return any(e.cycle_id == cid for tl in v.timelines.values() for e in tl.values())

        seen = await self.readmodel.wait_for(first_events, self.cycle_wait_seconds)
        events = sorted((e for tl in self.views.timelines.values() for e in tl.values() if e.cycle_id == cid),
                        key=lambda e: e.timestamp)
        report = self.views.reports.get(cid)
        status: Literal["accepted", "started", "reported"] = (
            "reported" if report else ("started" if seen else "accepted"))
        msg = ("cycle accepted; no worker reported on it within "
               f"{self.cycle_wait_seconds:.0f} s — follow it with list_improvements / get_system_status"
               if not seen else f"cycle {status}")
        return CycleTriggerResult(command_id=cid, cycle_id=cid, status=status, tenant_id=tenant_id,
                                  analysis_window_hours=analysis_window_hours, max_improvements=max_improvements,
                                  events=events, report=report, message=msg)

    async def generate_component(self, p: Principal, component_type: str, requirements: dict[str, Any],
                                 context: dict[str, Any] | None) -> ComponentRequestResult:
        if not self.settings.enable_component_generation:
            raise BadArgument("component generation is disabled (ENABLE_COMPONENT_GENERATION=false)")
        if component_type not in COMPONENT_TYPES:
            raise BadArgument(f"component_type must be one of {list(COMPONENT_TYPES)}, got '{component_type}'")
        if not requirements:
            raise BadArgument("requirements must be a non-empty object describing the component")
        p.require_role("operator", action="request component generation")
        tenant_id = (context or {}).get("tenant_id") or p.default_tenant()
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise BadArgument("context.tenant_id must be a string")
        self.check_tenant_arg(p, tenant_id)
        if tenant_id is None and not p.has_role("approver"):
            raise AuthError(f"'{p.name}' may not request a system-wide component: needs role approver or admin")
        cid = new_id("gen")
        await self.publisher.command(GenerateComponent(
            command_id=cid, timestamp=utcnow(), actor=p.name, roles=sorted(p.roles), tenant_id=tenant_id,
            component_type=component_type, requirements=requirements, context=context or {}))
        await self.publisher.audit(p.name, "code_generation_request", tenant_id=tenant_id, target=cid,
                                   detail={"component_type": component_type, "requirements": requirements})
        return ComponentRequestResult(command_id=cid, status="accepted", component_type=component_type,
                                      requested_by=p.name, tenant_id=tenant_id,
                                      message="generation request queued for the improvement workers")

    async def decide(self, p: Principal, decision: DecisionKind, improvement_id: str,
                     reason: str) -> DecisionResult:
        """Publish a decision the worker will apply: the same rule (streams/decisions.py) is checked here
        so the caller is told at once what the worker would refuse."""
        ex = self.visible_execution(p, improvement_id)
        if decision == "reject" and not reason.strip():
            raise BadArgument("reject needs a reason (it is audited and shown in the timeline)")
        self._check_rule(p, decision, ex)
        cid = new_id(decision)
        await self.publisher.command(DecisionCommand(
            command_id=cid, kind=decision, timestamp=utcnow(), actor=p.name, roles=sorted(p.roles),
            tenant_id=ex.tenant_id or None, improvement_id=improvement_id, reason=reason,
            all_tenants=p.all_tenants))
        await self.publisher.audit(p.name, f"improvement.{decision}", tenant_id=ex.tenant_id or None,
                                   target=improvement_id, detail={"reason": reason, "command_id": cid})
        return DecisionResult(command_id=cid, improvement_id=improvement_id, decision=decision,
                              status="accepted", actor=p.name, reason=reason)

    def _check_rule(self, p: Principal, decision: DecisionName, ex: ImprovementExecution) -> None:
        """The worker's rule (streams/decisions.py), checked before publishing: refused here, refused there."""
        refused = refusal(decision, actor=p.name, roles=p.roles, all_tenants=p.all_tenants,
                          requested_by=ex.requested_by, status=ex.status,
                          system_wide=ex.opportunity is not None and ex.opportunity.scope == "system",
                          improvement_id=ex.improvement_id, terminal=ex.status in TERMINAL_STATUSES)
        if refused is not None:
            raise AuthError(refused.message) if refused.forbidden else BadArgument(refused.message)

    async def resolve_conflict(self, p: Principal, improvement_id: str, action: str,
                               reason: str) -> DecisionResult:
        """Move an improvement paused as `conflict` on: `retry_rollback` (after the changed targets were put
        back) or `keep_current` (give up; the values someone else set stay, a reason is required)."""
        if action not in RESOLVE_ACTIONS:
            raise BadArgument(f"action must be one of {list(RESOLVE_ACTIONS)}, got '{action}'")
        ex = self.visible_execution(p, improvement_id)
        if action == "keep_current" and not reason.strip():
            raise BadArgument("keep_current needs a reason (it is audited and shown in the timeline)")
        self._check_rule(p, "resolve_conflict", ex)
        cid = new_id("resolve")
        cmd = ResolveConflict(command_id=cid, timestamp=utcnow(), actor=p.name, roles=sorted(p.roles),
                              tenant_id=ex.tenant_id or None, improvement_id=improvement_id,
                              action=action,  # type: ignore[arg-type]
                              reason=reason, all_tenants=p.all_tenants)
        await self.publisher.command(cmd)
        await self.publisher.audit(p.name, "improvement.resolve_conflict", tenant_id=ex.tenant_id or None,
                                   target=improvement_id, detail={"action": action, "reason": reason,
                                                                  "command_id": cid})
        return DecisionResult(command_id=cid, improvement_id=improvement_id, decision="resolve_conflict",
                              status="accepted", actor=p.name, reason=reason, action=cmd.action)
