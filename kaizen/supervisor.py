"""`kaizen run`: the whole service in one process group, every child started and stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from kaizen.embedded import EmbeddedStack, ManagedProcess, _die_with_parent, port_in_use, start_embedded
from streams.settings import Settings
from streams.topics import TOPICS

log = structlog.get_logger(__name__)


@dataclass
class Supervisor:
    """Starts the embedded stack (if needed) and the kaizen processes; stops them all by pid."""

    settings: Settings
    log_dir: Path
    stack: EmbeddedStack = field(default_factory=EmbeddedStack)
    children: list[ManagedProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    force_moto: bool = False  # the demo: moto even when AWS credentials exist (never write to real AWS)

    def start_infrastructure(self) -> dict[str, str]:
        s = self.settings
        self.stack = start_embedded(
            kafka=s.kafka_bootstrap_servers, aws_endpoint=s.aws_endpoint_url,
            kafka_port=s.kaizen_embedded_kafka_port, moto_port=s.kaizen_embedded_moto_port, log_dir=self.log_dir,
            force_moto=self.force_moto,
        )
        self.env = dict(self.stack.env)
        if s.kafka_bootstrap_servers:
            self.env["KAFKA_BOOTSTRAP_SERVERS"] = s.kafka_bootstrap_servers
        asyncio.run(create_topics(self.env["KAFKA_BOOTSTRAP_SERVERS"], s.kafka_topic_partitions))
        return self.env

    def spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None,
              terminal: bool = False) -> ManagedProcess:
        """Start `python -m kaizen.cli ARGS` as a child that dies with us; its output goes to its log file,
        or with `terminal` to our own stdout/stderr (the demo's progress)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = None if terminal else open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaizen.cli", *args],
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=out, stderr=None if terminal else subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        mp = ManagedProcess(name, proc, 0, self.log_dir / f"{name}.log")
        self.children.append(mp)
        log.info("started", process=name, pid=proc.pid, log=str(mp.log_path))
        return mp

    def check_mcp_port(self) -> None:
        port = self.settings.self_building_mcp_port
        if port_in_use(port):
            raise SystemExit(
                f"error: port {port} for the MCP server is taken; stop what uses it or set SELF_BUILDING_MCP_PORT"
            )

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        self.stack.stop()

    def wait(self, stop_after: float | None = None) -> int:
        """Block until Ctrl-C/SIGTERM (or a child dies, or `stop_after` seconds)."""
        stopping = {"flag": False}

        def _handler(signum: int, _frame: object) -> None:
            stopping["flag"] = True

        old_int = signal.signal(signal.SIGINT, _handler)
        old_term = signal.signal(signal.SIGTERM, _handler)
        start = time.monotonic()
        rc = 0
        try:
            while not stopping["flag"]:
                for child in self.children:
                    if not child.alive():
                        log.error("child exited", process=child.name, code=child.proc.returncode,
                                  log=str(child.log_path))
                        return child.proc.returncode or 1
                if stop_after is not None and time.monotonic() - start > stop_after:
                    break
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        return rc


async def create_topics(bootstrap: str, partitions: int) -> None:
    """Declare every topic of streams.topics with its configuration (idempotent)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    for attempt in range(20):
        try:
            await admin.start()
            break
        except Exception as exc:  # noqa: BLE001 - broker still starting; retried, then raised
            if attempt == 19:
                raise
            log.debug("waiting for broker", error=str(exc))
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        from streams.settings import get_settings

        rf = get_settings().kafka_replication_factor
        new = [NewTopic(t.name, num_partitions=partitions, replication_factor=rf, topic_configs=dict(t.config))
               for t in TOPICS if t.name not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()
