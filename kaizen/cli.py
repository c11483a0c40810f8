"""The `kaizen` command line (typer): run, worker, connect, mcp, demo, score, patterns, bench, healing."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from streams.logging import configure_logging

app = typer.Typer(
    name="kaizen",
    help="Kafka-native continuous-improvement loop for services that report to AWS CloudWatch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from streams.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        _fail(f"invalid configuration: {exc}")


@app.command()
def run(
    workers: Annotated[int, typer.Option(min=1, max=8, help="Faust workers to start in the consumer group")] = 1,
    demo: Annotated[bool, typer.Option(help="Run the closed-loop demo workload and scenarios")] = True,
    scenario: Annotated[str, typer.Option(help="Demo scenario, or 'all'")] = "all",
    mcp: Annotated[bool, typer.Option(help="Serve the MCP server and dashboard")] = True,
    connectors: Annotated[bool, typer.Option(help="Run the CloudWatch connectors")] = True,
    stop_after: Annotated[float | None, typer.Option(help="Stop after N seconds (default: until Ctrl-C)")] = None,
) -> None:
    """The whole service: embedded broker and moto when nothing is configured, workers, connectors,
    MCP server and (by default) the closed-loop demo. Ctrl-C stops every process it started."""
    configure_logging()
    from kaizen.demo.env import connectors_available
    from kaizen.supervisor import Supervisor

    if demo:
        from kaizen.demo.env import prepare_run_env

        why_not = prepare_run_env(os.environ)  # the demo profile: 1 s telemetry, short monitoring, demo tokens
        if why_not:
            typer.echo(why_not)
            demo = False
    settings = _settings()
    sup = Supervisor(settings, settings.kaizen_data_dir / "logs")
    if mcp:
        sup.check_mcp_port()
    rc = 0
    try:
        env = sup.start_infrastructure()
        typer.echo(f"kafka: {env['KAFKA_BOOTSTRAP_SERVERS']}   aws: {env.get('AWS_ENDPOINT_URL', 'real AWS')}")
        for i in range(workers):
            sup.spawn(f"worker-{i}", ["worker"])
        if connectors and connectors_available():
            sup.spawn("connect", ["connect"])
        elif connectors and not demo:
            typer.echo("warning: `kaizen connect` is not in this build; no CloudWatch connectors")
        if mcp:
            sup.spawn("mcp", ["mcp"])
            typer.echo(f"MCP server: http://{settings.self_building_mcp_host}:{settings.self_building_mcp_port}/mcp"
                       f"   dashboard: http://{settings.self_building_mcp_host}:{settings.self_building_mcp_port}/")
        if demo:
            sup.spawn("demo", ["demo", "--attach", "--scenario", scenario], terminal=True)
        typer.echo(f"logs: {sup.log_dir}   (Ctrl-C to stop)")
        rc = sup.wait(stop_after)
    finally:
        sup.stop()
        typer.echo("stopped every process kaizen started")
    raise typer.Exit(rc)


@app.command()
def worker(loglevel: Annotated[str, typer.Option(help="debug|info|warning")] = "info") -> None:
    """One Faust worker joining the configured consumer group (KAFKA_BOOTSTRAP_SERVERS)."""
    configure_logging()
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set; `kaizen run` starts an embedded broker, `kaizen worker` joins one")
    from kaizen.worker import run_worker

    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker parses argv; give it nothing of ours
    run_worker(loglevel)


@app.command()
def connect(once: Annotated[bool, typer.Option(help="Poll every source once and exit")] = False) -> None:
    """The CloudWatch connectors as their own process (publishes to the raw telemetry topics)."""
    configure_logging()
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set")
    from kaizen.connect import run_connectors

    asyncio.run(run_connectors(settings, once=once))


@app.command("mcp")
def mcp_cmd(stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP over stdio (desktop clients)")] = False) -> None:
    """The MCP server: streamable HTTP on SELF_BUILDING_MCP_PORT at /mcp (+ /health, /metrics, dashboard), or stdio."""
    configure_logging(stderr=True)
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set: point the MCP server at the cluster (`kaizen run` prints it)")
    from mcp_server import server

    if stdio:
        asyncio.run(server.run_stdio(settings))
        return

    async def _serve() -> None:
        import signal

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(settings, stop)

    asyncio.run(_serve())


@app.command()
def score(
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV with columns timestamp,value")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write: timestamp,value,anomaly_score")],
) -> None:
    """Replay a series through the live anomaly detector (backtest); one output row per input row."""
    from kaizen.replay import score_csv

    if not input.is_file():
        _fail(f"--input {input}: no such file")
    try:
        n = score_csv(input, output)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(f"scored {n} rows -> {output}")


@app.command()
def patterns(
    input: Annotated[Path, typer.Option("--input", "-i", help="Text file: one log message per line")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write: LineId,EventId,EventTemplate")],
) -> None:
    """Replay log messages through the live pattern miner; write each line's cluster."""
    from kaizen.replay import patterns_file

    if not input.is_file():
        _fail(f"--input {input}: no such file")
    n, k = patterns_file(input, output)
    typer.echo(f"{n} lines -> {k} patterns -> {output}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="Short runs (under 5 minutes in all)")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file to write")] = Path("bench.json"),
    only: Annotated[str | None, typer.Option(help="Comma-separated benchmark names")] = None,
) -> None:
    """Run the benchmarks (each beside its anchor) and write their JSON."""
    from benchmarks.runner import run_all

    names = [n.strip() for n in only.split(",")] if only else None
    try:
        run_all(quick=quick, output=output, names=names)
    except KeyError as exc:
        _fail(f"unknown benchmark {exc}")


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="latency-regression | bad-change | error-burst | alarm | all")] = "all",
    report: Annotated[Path | None, typer.Option(help="Write a JSON report of the scenario timelines")] = None,
    exit_after_cycle: Annotated[bool, typer.Option(help="Exit once the scenarios reached their verdicts")] = False,
    attach: Annotated[bool, typer.Option(help="Use the stack started by `kaizen run` (internal)")] = False,
) -> None:
    """The closed-loop demo: a simulated service reporting to CloudWatch, faults, and the loop fixing them."""
    configure_logging()
    from kaizen.demo.cli import run_demo

    rc = run_demo(scenario=scenario, report=report, exit_after_cycle=exit_after_cycle, attach=attach)
    raise typer.Exit(rc)


@app.command("tail")
def tail_cmd(
    topic: Annotated[str, typer.Argument(help="Topic to print, e.g. improvements.events")],
    end: Annotated[bool, typer.Option("--end", help="Start at the end instead of the beginning")] = False,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many quiet seconds")] = None,
) -> None:
    """Print a topic's records (key TAB value) from every partition — like `kcat -C`."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set (`kaizen run` prints the embedded broker's address)")
    from kaizen.tail import tail

    try:
        asyncio.run(tail(settings.kafka_bootstrap_servers, topic, not end, idle_exit))
    except ValueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command("produce")
def produce_cmd(
    topic: Annotated[str, typer.Argument(help="Topic, e.g. telemetry.metrics.raw")],
    key: Annotated[str | None, typer.Option("--key", "-k", help="Message key (raw telemetry: the tenant_id)")] = None,
) -> None:
    """Send each line of stdin as one message — like `kcat -P`."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set (`kaizen run` prints the embedded broker's address)")
    from kaizen.tail import produce

    n = asyncio.run(produce(settings.kafka_bootstrap_servers, topic, key))
    typer.echo(f"sent {n} messages to {topic}", err=True)


@app.command("cloudwatch-export")
def cloudwatch_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout)")] = None,
) -> None:
    """Export kaizen's CloudWatch dashboard and alarm definitions (the seeds') as JSON."""
    import orjson

    from kaizen.cloudwatch_export import export_definitions

    data = orjson.dumps(export_definitions(_settings()), option=orjson.OPT_INDENT_2)
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.write(data.decode() + "\n")


@app.command("validate")
def validate_cmd(
    directory: Annotated[Path, typer.Argument(help="Directory whose files are the change set (paths relative to it)")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the change is for")],
    component: Annotated[str | None, typer.Option("--component", help="Component whose policy applies")] = None,
    system_wide: Annotated[bool, typer.Option("--system-wide", help="A change for every tenant")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Validate DIR's files as one change set exactly as the improvement cycle does (docs/validation.md).
    Exit 0 when acceptable, 1 when rejected (every finding printed), 2 on usage errors."""
    from kaizen.validate_cmd import main as validate_main

    raise typer.Exit(validate_main(directory, tenant, component, system_wide, as_json, _settings()))


def _mount_healing() -> None:
    try:
        from kaizen.healing_cli import app as healing_app
    except ModuleNotFoundError:
        return
    app.add_typer(healing_app, name="healing", help="Self-healing triggers: status, triggers, actions, check, history")


_mount_healing()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
