"""The environment profile the demo stack runs with: 1 s telemetry, short monitoring, demo MCP tokens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import orjson
import structlog
from rich.console import Console

from kaizen.embedded import free_port
from streams.errors import ConfigError
from streams.settings import Settings

# Defaults only: anything already set in the environment wins.
DEMO_ENV: dict[str, str] = {
    "KAIZEN_DATA_DIR": ".kaizen/demo",
    "CLOUDWATCH_STREAM_INTERVAL_SECONDS": "1",
    "CLOUDWATCH_METRICS_PERIOD": "1",  # high-resolution metrics (StorageResolution=1); moto serves 1 s periods
    "CLOUDWATCH_METRICS_LAG_SECONDS": "5",
    "CLOUDWATCH_METRICS_STATISTICS": '["Average"]',
    "CLOUDWATCH_LOG_GROUP_PATTERN": "/kaizen/demo/*",
    "CLOUDWATCH_BREAKER_RECOVERY_SECONDS": "10",
    "IMPROVEMENT_CYCLE_INTERVAL_HOURS": "8760",  # cycles come from the demo (MCP) and the critical alarm
    "MAX_CONCURRENT_IMPROVEMENTS": "4",
    "MONITORING_DURATION_SECONDS": "40",  # canary stage 30 % of it: > telemetry lag (p50 ≈ 5 s)
    "MONITORING_CHECK_INTERVAL_SECONDS": "1",
    "BASELINE_WINDOW_SECONDS": "20",  # > telemetry lag, and within the faulted period (see demo_cli)
    "ROLLBACK_DEGRADATION_THRESHOLD": "0.10",
    "CANARY_FRACTION": "0.1",
    "KAIZEN_ACTUATOR": "ssm",
    "KAFKA_TOPIC_PARTITIONS": "4",
    "KAIZEN_BROKER_SESSION_TIMEOUT": "4",
    "OPPORTUNITY_DECAY_HOURS": "1",
    "LLM_PROVIDER": "offline",
}
OPERATOR_TOKEN_ENV = "KAIZEN_DEMO_OPERATOR_TOKEN"
APPROVER_TOKEN_ENV = "KAIZEN_DEMO_APPROVER_TOKEN"
OPERATOR = "demo-operator"
APPROVER = "demo-approver"


def demo_namespaces() -> str:
    """The namespaces the demo's services report to (one per service, as in the lab), comma-separated."""
    from kaizen.lab.runner import namespaces
    from kaizen.lab.schema import demo_dir, load_cases

    return ",".join(namespaces(load_cases([demo_dir()])))


def apply_demo_env(env: MutableMapping[str, str]) -> dict[str, str]:
    """Set the demo defaults that are not already set (CLOUDWATCH_NAMESPACE: the demo services'
    namespaces); returns what was set."""
    applied = {k: v for k, v in DEMO_ENV.items() if k not in env}
    if "CLOUDWATCH_NAMESPACE" not in env:
        applied["CLOUDWATCH_NAMESPACE"] = demo_namespaces()
    env.update(applied)
    return applied


def write_tokens(env: MutableMapping[str, str]) -> Path | None:
    """Two demo principals for the MCP server: an operator (triggers cycles) and a different approver.

    Written to <data dir>/demo-tokens.json unless a tokens file is configured; the demo process finds
    the tokens in KAIZEN_DEMO_OPERATOR_TOKEN / KAIZEN_DEMO_APPROVER_TOKEN. Returns the file written."""
    if env.get("SELF_BUILDING_MCP_TOKENS_FILE"):
        return None
    path = Path(env.get("KAIZEN_DATA_DIR", DEMO_ENV["KAIZEN_DATA_DIR"])) / "demo-tokens.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    operator, approver = "op-" + secrets.token_urlsafe(24), "ap-" + secrets.token_urlsafe(24)
    path.write_bytes(orjson.dumps({
        operator: {"principal": OPERATOR, "tenants": "*", "roles": ["operator"]},
        approver: {"principal": APPROVER, "tenants": "*", "roles": ["approver"]},
    }, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)
    env.update({"SELF_BUILDING_MCP_TOKENS_FILE": str(path), OPERATOR_TOKEN_ENV: operator,
                APPROVER_TOKEN_ENV: approver})
    env.setdefault("SELF_BUILDING_MCP_API_KEY", "admin-" + secrets.token_urlsafe(24))
    return path


def reset_connector_state(data_dir: Path) -> None:
    """A fresh embedded endpoint has no history: forget the connector cursors of earlier runs."""
    for sub in ("cursors",):
        target = data_dir / sub
        if target.is_dir():
            shutil.rmtree(target)


class DemoError(ConfigError):
    """The demo stack cannot start as configured."""


@contextlib.contextmanager
def demo_stack(console: Console, workers: int = 1) -> Iterator[Settings]:
    """The whole stack for `kaizen demo`: embedded broker and moto (the demo never writes to real AWS unless
    AWS_ENDPOINT_URL points somewhere), a worker, the connectors and the MCP server; all stopped by pid."""
    from kaizen.embedded import port_in_use
    from kaizen.supervisor import Supervisor, hand_over_keys
    from streams.settings import get_settings

    apply_demo_env(os.environ)
    write_tokens(os.environ)
    if "SELF_BUILDING_MCP_PORT" not in os.environ and port_in_use(8004):
        os.environ["SELF_BUILDING_MCP_PORT"] = str(free_port())
    get_settings.cache_clear()
    settings = get_settings()
    reset_connector_state(settings.kaizen_data_dir)
    sup = Supervisor(settings, settings.kaizen_data_dir / "logs", force_moto=True)
    try:
        env = sup.start_infrastructure()
        os.environ.update(env)
        get_settings.cache_clear()
        settings = get_settings()
        for i in range(workers):
            sup.spawn(f"worker-{i}", ["worker"])
        if connectors_available():
            sup.spawn("connect", ["connect"])
        keys = hand_over_keys(settings, os.environ)
        server = sup.spawn("mcp", ["mcp"])
        if not sup.wait_listening(server, settings.self_building_mcp_host, settings.self_building_mcp_port):
            keys = [f"error: the MCP server did not start — see {server.log_path}"]
        for line in [*sup.describe_infrastructure(), *keys, f"logs: {sup.log_dir}"]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        yield settings
    finally:
        sup.stop()
        console.print("stopped every process the demo started")


def prepare_run_env(env: MutableMapping[str, str]) -> str | None:
    """For `kaizen run` with the demo: the demo profile and tokens, unless kaizen would talk to real AWS
    (credentials and no AWS_ENDPOINT_URL). Returns why the demo is off, or None when it is on."""
    from kaizen.embedded import aws_credentials_configured
    from streams.settings import get_settings

    if not env.get("AWS_ENDPOINT_URL") and aws_credentials_configured():
        return ("AWS credentials found and no AWS_ENDPOINT_URL: kaizen runs against real AWS, so the demo "
                "workload is off (run `kaizen demo` for the embedded demo)")
    apply_demo_env(env)
    write_tokens(env)
    get_settings.cache_clear()
    if not env.get("AWS_ENDPOINT_URL"):
        reset_connector_state(get_settings().kaizen_data_dir)
    return None


def connectors_available() -> bool:
    """Whether the `kaizen connect` process exists in this build (else the demo polls CloudWatch itself)."""
    import importlib.util

    return importlib.util.find_spec("kaizen.connect") is not None


async def run_connectors_here(settings: Settings) -> None:
    """The CloudWatch connectors inside the demo process (used when `kaizen connect` is unavailable)."""
    from connectors.cloudwatch.client import make_clients
    from connectors.cloudwatch.runner import ConnectorRunner
    from connectors.publisher import TelemetryPublisher

    assert settings.kafka_bootstrap_servers
    publisher = TelemetryPublisher(settings.kafka_bootstrap_servers, acks=1, compression_type=settings.compression_type)
    await publisher.start()
    runner = ConnectorRunner(settings, publisher, make_clients(settings), metrics_lookback_seconds=30,
                             logs_lookback_seconds=60)
    try:
        while True:
            try:
                await runner.run(asyncio.Event())
            except Exception as exc:  # noqa: BLE001 - a connector bug must not end the demo; logged, restarted
                structlog.get_logger(__name__).error("in-process connectors failed; restarting",
                                                     error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(1.0)
    finally:
        await publisher.stop()
