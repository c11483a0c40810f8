"""Composition and transports of the MCP server: the ASGI app (HTTP), stdio, and `kaizen mcp` runs them.

Auth choice: with neither SELF_BUILDING_MCP_API_KEY nor SELF_BUILDING_MCP_TOKENS_FILE set, a random
admin token is generated at start and printed (stderr and the log), so `make run` works with nothing
configured and the server is never open. stdio mode: the process owner is the caller; it presents
KAIZEN_MCP_TOKEN (a token of the tokens file) or, by default, SELF_BUILDING_MCP_API_KEY.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mcp_server import metrics
from mcp_server.api import api_routes
from mcp_server.auth import PlainUnauthorized, TokenStore, build_token_store, stdio_principal
from mcp_server.publisher import AGENT_ID, Publisher
from mcp_server.readmodel import ReadModel
from mcp_server.service import KaizenService
from mcp_server.tools import build_mcp
from streams import topics as t
from streams.records import StatusReport, utcnow
from streams.settings import Settings

log = structlog.get_logger(__name__)
DASHBOARD = Path(__file__).resolve().parent / "dashboard"
HEARTBEAT_SECONDS = 10.0


def build_app(settings: Settings, readmodel: ReadModel, producer: AIOKafkaProducer, *,
              store: TokenStore | None = None, cycle_wait_seconds: float = 10.0) -> Starlette:
    """The ASGI app: /mcp (streamable HTTP, bearer auth), /health, /metrics, / (dashboard), /api/*."""
    store = store if store is not None else build_token_store(settings)
    service = KaizenService(settings, readmodel, Publisher(producer), cycle_wait_seconds=cycle_wait_seconds)
    metrics.bind(service.metrics)
    mcp = build_mcp(service, store)
    mcp_app = mcp.http_app(path="/mcp")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "healthy", "agent": AGENT_ID})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def index(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html")

    app = Starlette(
        routes=[Route("/health", health), Route("/metrics", prometheus), Route("/", index),
                *api_routes(service, store),
                Mount("/dashboard", StaticFiles(directory=DASHBOARD)),
                Mount("/", PlainUnauthorized(mcp_app))],
        lifespan=mcp_app.lifespan,
    )
    app.state.service = service
    app.state.store = store
    return app


async def _start_kafka(settings: Settings) -> tuple[ReadModel, AIOKafkaProducer]:
    if not settings.kafka_bootstrap_servers:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (kaizen run / kaizen mcp start the embedded broker)")
    bootstrap = settings.kafka_bootstrap_servers
    readmodel = ReadModel(bootstrap, partitions=settings.kafka_topic_partitions)
    await readmodel.start(wait_loaded=60.0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    await producer.start()
    return readmodel, producer


async def _heartbeat(publisher: Publisher, readmodel: ReadModel, process_id: str) -> None:
    while True:
        await publisher.send(t.STATUS, process_id, StatusReport(
            process_id=process_id, role="mcp", timestamp=utcnow(), healthy=readmodel.broker_reachable,
            detail={"records_applied": readmodel.views.records_applied}))
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _announce_token(store: TokenStore) -> None:
    if store.generated_token:
        print(f"kaizen MCP: no SELF_BUILDING_MCP_API_KEY or tokens file configured; generated admin token "
              f"for this run: {store.generated_token}", file=sys.stderr, flush=True)
        log.warning("generated an admin token for this run (set SELF_BUILDING_MCP_API_KEY to choose one)")


async def serve(settings: Settings, stop_event: asyncio.Event) -> None:
    """Run the HTTP server (and its read model, producer, registry record, heartbeat) until stop_event."""
    readmodel, producer = await _start_kafka(settings)
    host, port = settings.self_building_mcp_host, settings.self_building_mcp_port
    try:
        store = build_token_store(settings)
        _announce_token(store)
        app = build_app(settings, readmodel, producer, store=store)
        publisher = Publisher(producer)
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104 - display only
        await publisher.register(f"http://{shown}:{port}")
        beat = asyncio.create_task(_heartbeat(publisher, readmodel, f"mcp-{socket.gethostname()}-{os.getpid()}"))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        server_task = asyncio.create_task(server.serve())
        log.info("MCP server listening", url=f"http://{shown}:{port}/mcp", dashboard=f"http://{shown}:{port}/")
        stopper = asyncio.create_task(stop_event.wait())
        await asyncio.wait({server_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await server_task
        for task in (beat, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await publisher.register(f"http://{shown}:{port}", status="stopped")
    finally:
        await producer.stop()
        await readmodel.stop()


async def run_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout for `kaizen mcp --stdio`; the caller is the token's principal."""
    store = build_token_store(settings, generate_if_empty=False)
    principal = stdio_principal(store, settings)  # refuse before touching Kafka
    readmodel, producer = await _start_kafka(settings)
    try:
        service = KaizenService(settings, readmodel, Publisher(producer))
        mcp = build_mcp(service, None, stdio=principal)
        await mcp.run_stdio_async(show_banner=False)
    finally:
        await producer.stop()
        await readmodel.stop()
