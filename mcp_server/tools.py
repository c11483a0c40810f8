"""The FastMCP server: kaizen's tools, the approval tools and state resources, audited per call."""

from __future__ import annotations

from typing import Any

import orjson
from fastmcp import FastMCP
from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.resources.base import ResourceResult
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import Middleware, MiddlewareContext
from fastmcp.server.middleware.middleware import CallNext
from fastmcp.tools.base import ToolResult
from mcp import types as mt

from mcp_server import metrics
from mcp_server.auth import KaizenTokenVerifier, Principal, TokenStore, principal_of
from mcp_server.models import (
    ComponentRequestResult,
    CycleTriggerResult,
    DecisionResult,
    ImprovementDetail,
    ImprovementList,
    InsightsResult,
    OpportunityList,
    SystemStatus,
)
from mcp_server.service import KaizenService
from streams.commands import DEFAULT_WINDOW_HOURS
from streams.errors import AccessDenied, InputError

INSTRUCTIONS = (
    "kaizen self-building agent: query telemetry insights, ranked improvement opportunities and "
    "improvements (with timelines), trigger improvement cycles, approve/reject/defer improvements and "
    "resolve conflicts. "
    "Every call is audited with the caller's identity; tenant-scoped tokens only see their tenants."
)


class _Caller:
    """Resolves the caller: the bearer token's principal over HTTP, the process owner over stdio."""

    def __init__(self, stdio: Principal | None) -> None:
        self.stdio = stdio

    def __call__(self) -> Principal:
        p = principal_of(get_access_token())
        if p is None:
            p = self.stdio
        if p is None:
            raise ToolError("not authenticated: send 'Authorization: Bearer <token>'")
        return p


class AuditMiddleware(Middleware):
    """Publishes an AuditRecord for every tool call (who, which tool, arguments, outcome) and counts it."""

    def __init__(self, service: KaizenService, caller: _Caller) -> None:
        self.service = service
        self.caller = caller

    async def on_call_tool(self, context: MiddlewareContext[mt.CallToolRequestParams],
                           call_next: CallNext[mt.CallToolRequestParams, ToolResult]) -> ToolResult:
        name = context.message.name
        args = dict(context.message.arguments or {})
        try:
            actor = self.caller().name
        except ToolError:
            actor = "anonymous"
        outcome, error = "ok", ""
        try:
            return await call_next(context)
        except Exception as exc:  # noqa: BLE001 - recorded in the audit trail, then re-raised unchanged
            outcome, error = "error", str(exc)[:500]
            raise
        finally:
            metrics.TOOL_CALLS.labels(tool=name, outcome=outcome).inc()
            tenant = args.get("tenant_id") if isinstance(args.get("tenant_id"), str) else None
            await self.service.publisher.audit(actor, f"mcp.{name}", tenant_id=tenant,
                                               target=args.get("improvement_id"),
                                               detail={"arguments": args, "outcome": outcome, "error": error})


    async def on_read_resource(self, context: MiddlewareContext[mt.ReadResourceRequestParams],
                               call_next: CallNext[mt.ReadResourceRequestParams, ResourceResult]) -> ResourceResult:
        try:
            actor = self.caller().name
        except ToolError:
            actor = "anonymous"
        outcome = "ok"
        try:
            return await call_next(context)
        except Exception:  # noqa: BLE001 - recorded in the audit trail, then re-raised unchanged
            outcome = "error"
            raise
        finally:
            await self.service.publisher.audit(actor, "mcp.read_resource", target=str(context.message.uri),
                                               detail={"outcome": outcome})


def _guard(exc: Exception) -> ToolError:
    return ToolError(str(exc))


def build_mcp(service: KaizenService, store: TokenStore | None, stdio: Principal | None = None) -> FastMCP:
    """The FastMCP server over `service`; `store` enables bearer auth (HTTP), `stdio` is the stdio caller."""
    caller = _Caller(stdio)
    mcp = FastMCP("Self-Building Agent", instructions=INSTRUCTIONS, version="1.0.0",
                  auth=KaizenTokenVerifier(store) if store is not None else None,
                  middleware=[AuditMiddleware(service, caller)], mask_error_details=False)

    @mcp.tool
    async def trigger_improvement_cycle(analysis_window_hours: int = DEFAULT_WINDOW_HOURS,
                                        max_improvements: int | None = None,
                                        tenant_id: str | None = None, component: str | None = None,
                                        problem_type: str | None = None) -> CycleTriggerResult:
        """Trigger an improvement cycle (manual): analyses the last `analysis_window_hours` of telemetry
        (1..720) and attempts at most `max_improvements` (1..MAX_CONCURRENT_IMPROVEMENTS, default
        MAX_CONCURRENT_IMPROVEMENTS) improvements,
        for one tenant or (admin/approver) all; `component` / `problem_type` focus it on one component's
        opportunities (that problem type first). Returns the cycle's first events if a worker reports
        within ~10 s, else the accepted command id."""
        try:
            return await service.trigger_cycle(caller(), analysis_window_hours, max_improvements, tenant_id,
                                               component=component, problem_type=problem_type)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def generate_component(component_type: str, requirements: dict[str, Any],
                                 context: dict[str, Any] | None = None) -> ComponentRequestResult:
        """Request generation of a new component (component_type: skill, agent or service) from
        `requirements`; `context.tenant_id` scopes it. Honours ENABLE_COMPONENT_GENERATION; audited."""
        try:
            return await service.generate_component(caller(), component_type, requirements, context)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def get_system_status() -> SystemStatus:
        """System health (broker, workers, connectors with breaker states), active improvements, queue,
        evolution level and the self-building metrics."""
        return service.system_status(caller())

    @mcp.tool
    async def query_telemetry_insights(metric_name: str | None = None, time_range_hours: int = 1,
                                       tenant_id: str | None = None) -> InsightsResult:
        """Analysed telemetry insights of the last `time_range_hours` (1..720), optionally for one metric
        and tenant, with counts by type/severity and recommendations."""
        try:
            return service.query_insights(caller(), metric_name, time_range_hours, tenant_id)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def list_opportunities(tenant_id: str | None = None, limit: int = 20,
                                 min_priority: str | None = None) -> OpportunityList:
        """Improvement opportunities ranked (critical first, then impact score); min_priority one of
        critical, high, medium, low."""
        try:
            return service.list_opportunities(caller(), tenant_id, limit, min_priority)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def get_improvement(improvement_id: str) -> ImprovementDetail:
        """One improvement's state (plan, deployment, monitoring, verdict) and its event timeline."""
        try:
            return service.get_improvement(caller(), improvement_id)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def list_improvements(tenant_id: str | None = None, status: str | None = None,
                                limit: int = 50) -> ImprovementList:
        """Improvements, most recently updated first, optionally by tenant and status."""
        try:
            return service.list_improvements(caller(), tenant_id, status, limit)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def approve_improvement(improvement_id: str, reason: str = "") -> DecisionResult:
        """Approve an improvement awaiting approval (role approver; not your own request; system-wide
        changes need an all-tenant approver). Publishes an approve command; audited."""
        try:
            return await service.decide(caller(), "approve", improvement_id, reason)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def reject_improvement(improvement_id: str, reason: str) -> DecisionResult:
        """Reject an improvement (role approver; a reason is required). Audited."""
        try:
            return await service.decide(caller(), "reject", improvement_id, reason)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def defer_improvement(improvement_id: str, reason: str = "") -> DecisionResult:
        """Defer an improvement awaiting approval (role operator or above); approve it later. Audited."""
        try:
            return await service.decide(caller(), "defer", improvement_id, reason)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    @mcp.tool
    async def resolve_conflict(improvement_id: str, action: str, reason: str = "") -> DecisionResult:
        """Resolve an improvement paused as `conflict` (a target kaizen changed was changed by someone else
        since; role approver). action `retry_rollback`: once the targets are put back (to kaizen's value or
        the previous one), undo and verify again — a value someone else set is still never overwritten;
        `keep_current`: end the improvement (rejected) keeping the values someone else set (reason
        required); kaizen's own changes still in place are undone. Audited."""
        try:
            return await service.resolve_conflict(caller(), improvement_id, action, reason)
        except (InputError, AccessDenied) as exc:
            raise _guard(exc) from exc

    def _json(model: Any) -> str:
        return orjson.dumps(model.model_dump(mode="json")).decode()

    @mcp.resource("kaizen://opportunities", mime_type="application/json")
    async def opportunities_resource() -> str:
        """The ranked opportunities visible to the caller."""
        return _json(service.list_opportunities(caller(), None, 1000, None))

    @mcp.resource("kaizen://improvements", mime_type="application/json")
    async def improvements_resource() -> str:
        """The improvements visible to the caller."""
        return _json(service.list_improvements(caller(), None, None, 1000))

    @mcp.resource("kaizen://improvements/{improvement_id}", mime_type="application/json")
    async def improvement_resource(improvement_id: str) -> str:
        """One improvement with its timeline."""
        try:
            return _json(service.get_improvement(caller(), improvement_id))
        except (InputError, AccessDenied) as exc:
            raise ResourceError(str(exc)) from exc

    @mcp.resource("kaizen://status", mime_type="application/json")
    async def status_resource() -> str:
        """System status and self-building metrics."""
        return _json(service.system_status(caller()))

    return mcp
