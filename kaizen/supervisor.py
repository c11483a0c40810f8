"""`kaizen run`: the whole service in one process group, every child started and stopped by its pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from kaizen.embedded import EmbeddedStack, ManagedProcess, _die_with_parent, start_embedded
from kaizen.errors import USER_ERROR_EXIT, UserError
from kaizen.preflight import check_port_free, quiet_kafka_client, wait_for_broker
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
    failure: str | None = None  # why a child stopped everything: "<what> — <what to do>"

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
        asyncio.run(create_topics(self.env["KAFKA_BOOTSTRAP_SERVERS"], s.kafka_topic_partitions,
                                  wait_seconds=s.kaizen_connect_wait_seconds))
        return self.env

    def describe_infrastructure(self) -> list[str]:
        """What the children use, as they will see it: the broker and AWS endpoint actually in their env."""
        started = {p.name for p in self.stack.processes}
        kafka = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        kafka_from = "embedded Tansu broker, in memory" if "tansu" in started else "KAFKA_BOOTSTRAP_SERVERS"
        endpoint = self.env.get("AWS_ENDPOINT_URL") or self.settings.aws_endpoint_url
        if "moto" in started:
            aws = f"{endpoint} (embedded moto server: no real AWS is touched)"
        elif endpoint:
            aws = f"{endpoint} (AWS_ENDPOINT_URL)"
        else:
            aws = f"real AWS, region {self.settings.aws_region} (credentials of the AWS SDK)"
        return [f"kafka: {kafka} ({kafka_from})", f"aws: {aws}"]

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
        mp = ManagedProcess(name, proc, 0, None if terminal else self.log_dir / f"{name}.log")
        self.children.append(mp)
        log.info("started", process=name, pid=proc.pid, log=str(mp.log_path))
        return mp

    def wait_listening(self, child: ManagedProcess, host: str, port: int, timeout: float = 90.0) -> bool:
        """Wait until the child listens on the port (so the URLs printed next answer); False if it died."""
        target = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - a local probe
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                return False
            with contextlib.suppress(OSError), socket.create_connection((target, port), timeout=0.5):
                return True
            time.sleep(0.2)
        return child.alive()

    def check_mcp_port(self) -> None:
        check_port_free(self.settings.self_building_mcp_host, self.settings.self_building_mcp_port,
                        "SELF_BUILDING_MCP_PORT", "the MCP server")

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
                        code = child.proc.returncode
                        log.error("child exited", process=child.name, code=code, log=str(child.log_path))
                        self.failure = child_failure(child.name, code, child.log_path)
                        return USER_ERROR_EXIT if code == USER_ERROR_EXIT else (code or 1)
                if stop_after is not None and time.monotonic() - start > stop_after:
                    break
                time.sleep(0.2)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        return rc


def child_failure(name: str, code: int | None, log_path: Path | None) -> str:
    """One line saying which child stopped and why: its own `error:` line when it printed one (the error
    contract), else the last line of its log."""
    why = ""
    if log_path is not None and log_path.is_file():
        with log_path.open("rb") as fh:
            fh.seek(max(0, log_path.stat().st_size - 65536))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        why = errors[-1].removeprefix("error: ") if errors else (lines[-1][:300] if lines else "")
    where = f"its log: {log_path}" if log_path else "its output is above"
    if why:
        return f"{name} stopped (exit code {code}): {why} ({where})"
    return f"{name} stopped (exit code {code}) — see {where}"


def hand_over_keys(settings: Settings, env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The dashboard URL with a token and a ready-to-paste MCP Inspector command with another one
    (`--stored-auth-only`: kaizen has no OAuth server, so a refused token is reported, not an OAuth flow).

    The demo's two principals (from its tokens file) go one to each; without the demo the admin key is
    used, generated here when none is configured so that it can be printed (the MCP child reads it too)."""
    from kaizen.demo.env import APPROVER_TOKEN_ENV, OPERATOR_TOKEN_ENV

    host = settings.self_building_mcp_host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
    base = f"http://{shown}:{settings.self_building_mcp_port}"
    operator, approver = env.get(OPERATOR_TOKEN_ENV), env.get(APPROVER_TOKEN_ENV)
    where = ""
    if operator and approver and settings.self_building_mcp_tokens_file:
        dash_token, dash_who, mcp_token, mcp_who = operator, "demo-operator", approver, "demo-approver"
        where = f"   (tokens: {settings.self_building_mcp_tokens_file})"
    else:
        key = settings.self_building_mcp_api_key or env.get("SELF_BUILDING_MCP_API_KEY")
        if not key and settings.self_building_mcp_tokens_file:
            return [f"MCP server: {base}/mcp   dashboard: {base}/  "
                    f"(use a token of {settings.self_building_mcp_tokens_file}: {base}/?token=...)"]
        if not key:
            key = "kz-" + secrets.token_urlsafe(24)
            env["SELF_BUILDING_MCP_API_KEY"] = key
        dash_token, dash_who, mcp_token, mcp_who = key, "admin", key, "admin"
    return [
        f"MCP server: {base}/mcp{where}",
        f"dashboard ({dash_who}): {base}/?token={dash_token}",
        f"MCP Inspector ({mcp_who}): npx @modelcontextprotocol/inspector@2 --cli {base}/mcp --transport http "
        f"--header 'Authorization: Bearer {mcp_token}' --stored-auth-only --method tools/list",
    ]


async def create_topics(bootstrap: str, partitions: int, wait_seconds: float = 15.0) -> None:
    """Declare every topic of streams.topics with its configuration (idempotent), after waiting at most
    `wait_seconds` for the broker (a UserError naming KAFKA_BOOTSTRAP_SERVERS after that)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    await asyncio.to_thread(wait_for_broker, bootstrap, wait_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    with quiet_kafka_client():
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            try:
                await admin.start()
                break
            except KafkaError as exc:  # the port answers but the broker is still starting: retried until the deadline
                await admin.close()
                if loop.time() >= deadline:
                    raise UserError(f"the Kafka broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS) accepts connections "
                                    f"but does not answer Kafka requests ({exc})",
                                    "check that address is a Kafka broker's listener") from exc
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
