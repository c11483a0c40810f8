"""The dashboard's JSON endpoints under /api (bearer token or ?token=), filtered by the caller's tenants."""

from __future__ import annotations

import time
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


LATE_SECONDS = 120.0  # log lines arrive this late: a window's count still counts this long after it ends
NOTABLE = 0.3  # below this a recent score or jump (3 robust sigmas) is noise: ranked by peak score only
RECENT_POINTS = 10  # "recent" = the last points of a series; the rest is its history


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def series_interest(s: dict[str, Any]) -> tuple[float, str]:
    """How much a series deserves a chart now, in [0, 1], and why: its recent anomaly score, a recent jump
    away from its own history (robust z-score of the recent mean), or being new. A series that peaked an hour
    ago and has been quiet since ranks below one that spikes now, whatever its old peak."""
    pts = [x for x in (s.get("points") or []) if isinstance(x, list) and len(x) >= 2 and _num(x[1]) is not None]
    if not pts:
        return 0.0, ""
    recent, history = pts[-RECENT_POINTS:], pts[:-RECENT_POINTS]
    score = max((_num(x[2]) or 0.0 for x in recent if len(x) > 2), default=0.0)
    change = 0.0
    if len(history) >= 5:
        hist = sorted(float(x[1]) for x in history)
        median = hist[len(hist) // 2]
        mad = sorted(abs(h - median) for h in hist)[len(hist) // 2]
        scale = max(mad * 1.4826, abs(median) * 0.01, 1e-9)
        peak_dev = max(abs(float(x[1]) - median) for x in recent)
        change = min(1.0, peak_dev / scale / 10.0)  # 10 robust sigmas count as a full spike
    new = 0.6 if len(history) < 5 else 0.0
    candidates = [(score, "anomalous now"), (change, "spiking"), (new, "new")]
    best = max((c for c in candidates if c[0] >= NOTABLE), default=(0.0, ""))
    return best


def chart_order(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Series to chart, most interesting now first (copies, each with its `chart_reason`)."""
    ranked = []
    for s in series:
        interest, why = series_interest(s)
        peak = max((_num(x[2]) or 0.0 for x in s.get("points") or [] if isinstance(x, list) and len(x) > 2),
                   default=0.0)
        ranked.append((-round(interest, 3), -peak, str(s.get("series")), {**s, "chart_reason": why}))
    ranked.sort(key=lambda r: r[:3])
    return [r[3] for r in ranked]


def _epoch(value: Any) -> float | None:
    """Epoch seconds from what a state record holds: epoch seconds (or ms), or an ISO 8601 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str) and value:
        from datetime import datetime

        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def pattern_now(x: dict[str, Any], window: float, now: float) -> dict[str, Any]:
    """A pattern as the dashboard shows it: times as epoch seconds, and the count of the current window
    (0 once that window has passed: the stored count is of the window the pattern was last seen in)."""
    last, first, start = _epoch(x.get("last_seen")), _epoch(x.get("first_seen")), _epoch(x.get("window_start"))
    count = int(x.get("count_window") or 0)
    current = count if start is None or now < start + window + LATE_SECONDS else 0
    return {**x, "last_seen": last, "first_seen": first, "count_current": current}


def dashboard_state(service: KaizenService, p: Principal, series_limit: int = 12) -> dict[str, Any]:
    """Everything the dashboard draws in one poll: series, patterns, ranking, improvements with timelines."""
    v = service.views
    now = time.time()
    series = chart_order([s for s in v.series.values() if p.can_see(s.get("tenant_id"))])
    window = float(service.settings.pattern_window_seconds)
    patterns = sorted((pattern_now(x, window, now) for x in v.patterns.values() if p.can_see(x.get("tenant_id"))),
                      key=lambda x: (-int(x["count_current"]), -float(x.get("last_seen") or 0)))
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
        "pattern_window_seconds": window,
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
