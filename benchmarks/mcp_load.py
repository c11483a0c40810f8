"""MCP server load: requests/s and p50/p99 of `get_system_status` and `list_opportunities` over streamable
HTTP, beside the same server's unauthenticated GET /health (the HTTP floor) in the same run."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from fastmcp import Client

from benchmarks.common import Stack, embedded_stack, new_app_id, start_process, summary_ms
from kaizen.embedded import free_port
from streams import topics as T
from streams.records import ImprovementOpportunity

TOKEN = "bench-token-0123456789abcdef"
TENANTS = 10
CONCURRENCY = 4


async def _seed(stack: Stack, opportunities: int) -> None:
    """Opportunities of TENANTS tenants on the opportunities topic, for the read model to serve."""
    now = datetime.now(UTC)
    p = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
    await p.start()
    try:
        for i in range(opportunities):
            o = ImprovementOpportunity(
                opportunity_id=f"opp-bench-{i}", title=f"latency of svc-{i}", description="p95 latency +40 %",
                impact_score=float(i % 7000), priority=("critical", "high", "medium", "low")[i % 4],
                severity=("critical", "high", "medium", "low")[i % 4], tenant_id=f"tenant-{i % TENANTS}",
                problem_type="latency", affected_components=[f"svc-{i}"], first_seen=now - timedelta(hours=1),
                last_seen=now)
            await p.send(T.OPPORTUNITIES, o.to_bytes(), key=o.opportunity_id.encode())
        await p.flush()
    finally:
        await p.stop()


async def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as h:
        while time.monotonic() < deadline:
            try:
                if (await h.get(f"{url}/health")).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    return False


async def _load(n: int, call: Any) -> dict[str, Any]:
    """n calls split over CONCURRENCY workers, each with its own session; requests/s and latency."""
    lat: list[float] = []
    errors = 0

    async def worker(count: int) -> None:
        nonlocal errors
        async with call() as fn:
            for _ in range(count):
                t = time.perf_counter()
                ok = await fn()
                lat.append(time.perf_counter() - t)
                errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
    secs = time.perf_counter() - started
    return {"requests": len(lat), "errors": errors, "requests_per_s": round(len(lat) / secs, 1), **summary_ms(lat)}


def _tool(url: str, name: str, args: dict[str, Any]) -> Any:
    class _Session:
        async def __aenter__(self) -> Any:
            self.client = Client(f"{url}/mcp", auth=TOKEN)
            await self.client.__aenter__()

            async def fn() -> bool:
                res = await self.client.call_tool(name, args)
                return not res.is_error
            return fn

        async def __aexit__(self, *exc: object) -> None:
            await self.client.__aexit__(*exc)
    return _Session


def _health(url: str) -> Any:
    class _Session:
        async def __aenter__(self) -> Any:
            self.client = httpx.AsyncClient(base_url=url)

            async def fn() -> bool:
                return (await self.client.get("/health")).status_code == 200
            return fn

        async def __aexit__(self, *exc: object) -> None:
            await self.client.aclose()
    return _Session


async def _measure(url: str, n: int) -> dict[str, Any]:
    # a few calls first: sessions, imports and caches warm
    await _load(CONCURRENCY * 2, _tool(url, "get_system_status", {}))
    out = {"anchor_http_health": await _load(n, _health(url))}
    out["get_system_status"] = await _load(n, _tool(url, "get_system_status", {}))
    out["list_opportunities"] = await _load(n, _tool(url, "list_opportunities", {"limit": 20}))
    return out


def run(quick: bool = False) -> dict[str, Any]:
    n = 200 if quick else 2_000
    opportunities = 1_000 if quick else 10_000
    with embedded_stack(moto=False) as stack:
        asyncio.run(_seed(stack, opportunities))
        port = free_port()
        env = {**stack.env(new_app_id("bench-mcp"), 4), "SELF_BUILDING_MCP_PORT": str(port),
               "SELF_BUILDING_MCP_HOST": "127.0.0.1", "SELF_BUILDING_MCP_API_KEY": TOKEN}
        proc = start_process(["-m", "kaizen.cli", "mcp"], env, "mcp-server")
        url = f"http://127.0.0.1:{port}"
        try:
            if not asyncio.run(_wait_ready(url, 60)):
                return {"benchmark": "mcp_load", "status": "error", "error": "server did not start",
                        "log": str(proc.log_path)}
            res = asyncio.run(_measure(url, n))
        finally:
            proc.stop()
    floor = res["anchor_http_health"]["requests_per_s"]
    return {"benchmark": "mcp_load",
            "load": {"requests_per_tool": n, "concurrency": CONCURRENCY, "opportunities": opportunities,
                     "tenants": TENANTS, "transport": "streamable HTTP, bearer token, one server process"},
            **res,
            "ratio_status_to_health": round(res["get_system_status"]["requests_per_s"] / floor, 3) if floor else None,
            "ratio_list_to_health": round(res["list_opportunities"]["requests_per_s"] / floor, 3) if floor else None}


if __name__ == "__main__":
    import sys

    print(orjson.dumps(run(quick="--quick" in sys.argv), option=orjson.OPT_INDENT_2).decode())
