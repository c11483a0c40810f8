"""`kaizen run`: check the configuration up front, start the stack, say what it uses, hand over the keys
(dashboard URL, MCP Inspector command), supervise the children and say why one stopped."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import typer

from kaizen.errors import UserError
from streams.settings import Settings


def _echo(line: str) -> None:
    typer.echo(line)


def check_up_front(settings: Settings, *, mcp: bool) -> None:
    """Everything a user can get wrong, before a process starts: tokens file, broker, AWS endpoint, port."""
    from kaizen.preflight import check_aws_endpoint, check_port_free, wait_for_broker

    if mcp and settings.self_building_mcp_tokens_file:
        from mcp_server.auth import TokenConfigError, load_tokens_file

        try:  # the MCP child would die on it later
            load_tokens_file(Path(settings.self_building_mcp_tokens_file))
        except TokenConfigError as exc:
            raise UserError(f"SELF_BUILDING_MCP_TOKENS_FILE: {exc}", "fix the file (README, MCP server: a mapping "
                            "token → principal/tenants/roles) or unset it") from None
    if settings.kafka_bootstrap_servers:
        wait_for_broker(settings.kafka_bootstrap_servers, settings.kaizen_connect_wait_seconds)
    if settings.aws_endpoint_url:
        check_aws_endpoint(settings.aws_endpoint_url, settings.kaizen_connect_wait_seconds)
    if mcp:
        check_port_free(settings.self_building_mcp_host, settings.self_building_mcp_port,
                        "SELF_BUILDING_MCP_PORT", "the MCP server")


def run_service(load_settings: Callable[[], Settings], *, workers: int, demo: bool, scenario: str, mcp: bool,
                connectors: bool, stop_after: float | None, echo: Callable[[str], None] = _echo) -> int:
    """Run until Ctrl-C/SIGTERM, `stop_after` seconds or a child's death; returns the exit code."""
    from kaizen.demo.env import connectors_available
    from kaizen.supervisor import Supervisor, hand_over_keys

    load_settings()  # the environment as given is valid before anything is started or written
    if demo:
        from kaizen.demo.env import prepare_run_env

        why_not = prepare_run_env(os.environ)  # the demo profile: 1 s telemetry, short monitoring, demo tokens
        if why_not:
            echo(why_not)
            demo = False
    settings = load_settings()
    check_up_front(settings, mcp=mcp)
    sup = Supervisor(settings, settings.kaizen_data_dir / "logs")
    rc = 0
    try:
        sup.start_infrastructure()
        for line in sup.describe_infrastructure():
            echo(line)
        for i in range(workers):
            sup.spawn(f"worker-{i}", ["worker"])
        if connectors and connectors_available():
            sup.spawn("connect", ["connect"])
        elif connectors and not demo:
            echo("warning: `kaizen connect` is not in this build; no CloudWatch connectors")
        if mcp:
            keys = hand_over_keys(settings, os.environ)  # before the MCP child starts: it reads the same tokens
            server = sup.spawn("mcp", ["mcp"])
            if sup.wait_listening(server, settings.self_building_mcp_host, settings.self_building_mcp_port):
                for line in keys:  # once the server answers: the URLs work when they are read
                    echo(line)
        if demo:
            sup.spawn("demo", ["demo", "--attach", "--scenario", scenario], terminal=True)
        echo(f"logs: {sup.log_dir}   (Ctrl-C to stop)")
        rc = sup.wait(stop_after)
    finally:
        # A second Ctrl-C (an impatient user, or a wrapper such as `timeout` passing the signal on to its
        # process group) must not cut the stopping short and leave children running.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            sup.stop()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        echo("stopped every process kaizen started")
    if sup.failure:
        typer.echo(f"error: {sup.failure}", err=True)
    return rc
