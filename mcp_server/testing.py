"""An in-process MCP server on a free port (uvicorn in the caller's event loop), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette

from mcp_server.auth import TokenStore
from mcp_server.readmodel import ReadModel
from mcp_server.server import build_app
from mcp_server.service import KaizenService
from streams.settings import Settings


@dataclass
class RunningServer:
    url: str
    app: Starlette
    readmodel: ReadModel
    producer: AIOKafkaProducer

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def service(self) -> KaizenService:
        svc: KaizenService = self.app.state.service
        return svc


@contextlib.asynccontextmanager
async def running_server(settings: Settings, store: TokenStore, *, cycle_wait_seconds: float = 10.0
                         ) -> AsyncIterator[RunningServer]:
    """Start read model, producer and uvicorn on 127.0.0.1:<free port>; stop them all on exit."""
    assert settings.kafka_bootstrap_servers, "settings need kafka_bootstrap_servers"
    readmodel = ReadModel(settings.kafka_bootstrap_servers, partitions=settings.kafka_topic_partitions)
    await readmodel.start(wait_loaded=60.0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks=1, linger_ms=2)
    await producer.start()
    port = _free_port()
    app = build_app(settings, readmodel, producer, store=store, cycle_wait_seconds=cycle_wait_seconds)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield RunningServer(f"http://127.0.0.1:{port}", app, readmodel, producer)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await readmodel.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
