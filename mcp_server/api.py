"""The dashboard's JSON endpoints under /api (bearer token or ?token=), filtered by the caller's tenants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_server import metrics
from mcp_server.auth import AuthError, Principal, TokenStore
from mcp_server.service import KaizenService
from mcp_server.views import execution_tenants

Handler = Callable[[Request, Principal], Awaitable[Any]]


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token")


def _json(data: Any) -> Response:
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    return JSONResponse(data)


def _authed(store: TokenStore, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        principal = store.lookup(_token(request))
        if principal is None:
            metrics.API_AUTH_FAILURES.inc()
            return JSONResponse({"error": "missing or invalid bearer token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="kaizen"'})
        try:
            return _json(await handler(request, principal))
        except AuthError as exc:
            return JSONResponse({"error": str(exc)}, status_code=403)
        except ValueError as exc:  # BadArgument, or a query parameter that is not a number
            return JSONResponse({"error": str(exc)}, status_code=400)
    return endpoint


def dashboard_state(service: KaizenService, p: Principal, series_limit: int = 12) -> dict[str, Any]:
    """Everything the dashboard draws in one poll: series, patterns, ranking, improvements with timelines."""
    v = service.views
    series = [s for s in v.series.values() if p.can_see(s.get("tenant_id"))]

    def peak(s: dict[str, Any]) -> float:
        pts = s.get("points") or []
        return max((float(x[2]) for x in pts if isinstance(x, list) and len(x) > 2 and x[2] is not None),
                   default=0.0)

    series.sort(key=lambda s: (-peak(s), str(s.get("series"))))
    patterns = sorted((x for x in v.patterns.values() if p.can_see(x.get("tenant_id"))),
                      key=lambda x: -int(x.get("count_window") or 0))
    improvements: list[dict[str, Any]] = []
    for iid in v.all_improvement_ids():
        ex = v.execution(iid)
        if ex is None or not p.can_see_any(execution_tenants(ex)):
            continue
        timeline = v.timeline(iid) or ex.history
        improvements.append({
            "improvement_id": iid, "status": ex.status, "tenant_id": ex.tenant_id,
            "title": ex.opportunity.title if ex.opportunity else "", "verdict": ex.verdict,
            "degradation": ex.degradation, "rollback_triggered": ex.rollback_triggered,
            "deployment": ex.deployment,
            "timeline": [e.model_dump(mode="json") for e in timeline],
        })
    improvements.sort(key=lambda d: d["timeline"][-1]["timestamp"] if d["timeline"] else "", reverse=True)
    healing = [h for h in v.healing if p.all_tenants or p.can_see(h.get("tenant_id"))][-50:]
    status = service.system_status(p)
    return {
        "principal": p.to_claims(),
        "status": {"healthy": status.healthy, "broker": status.broker.model_dump(mode="json"),
                   "metrics": status.metrics.model_dump(mode="json"), "breakers": status.breakers,
                   "evolution_level": status.evolution_level,
                   "workers": [w.model_dump(mode="json", exclude={"detail"}) for w in status.workers],
                   "connectors": [c.model_dump(mode="json", exclude={"detail"}) for c in status.connectors]},
        "series": series[:series_limit],
        "series_total": len(series),
        "patterns": patterns[:50],
        "opportunities": [o.model_dump(mode="json", exclude={"telemetry_evidence"})
                          for o in service.list_opportunities(p, None, 30, None).opportunities],
        "improvements": improvements[:30],
        "healing": healing,
    }


def api_routes(service: KaizenService, store: TokenStore) -> list[Route]:
    async def state(request: Request, p: Principal) -> Any:
        return dashboard_state(service, p)

    async def status(request: Request, p: Principal) -> Any:
        return service.system_status(p)

    async def opportunities(request: Request, p: Principal) -> Any:
        q = request.query_params
        return service.list_opportunities(p, q.get("tenant_id"), int(q.get("limit", 20)), q.get("min_priority"))

    async def improvements(request: Request, p: Principal) -> Any:
        q = request.query_params
        return service.list_improvements(p, q.get("tenant_id"), q.get("status"), int(q.get("limit", 50)))

    async def improvement(request: Request, p: Principal) -> Any:
        return service.get_improvement(p, request.path_params["improvement_id"])

    async def insights(request: Request, p: Principal) -> Any:
        q = request.query_params
        return service.query_insights(p, q.get("metric_name"), int(q.get("time_range_hours", 1)),
                                      q.get("tenant_id"))

    async def whoami(request: Request, p: Principal) -> Any:
        return p.to_claims()

    return [
        Route("/api/state", _authed(store, state)),
        Route("/api/status", _authed(store, status)),
        Route("/api/opportunities", _authed(store, opportunities)),
        Route("/api/improvements", _authed(store, improvements)),
        Route("/api/improvements/{improvement_id}", _authed(store, improvement)),
        Route("/api/insights", _authed(store, insights)),
        Route("/api/whoami", _authed(store, whoami)),
    ]
