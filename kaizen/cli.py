"""The `kaizen` command line (typer): run, worker, connect, mcp, demo, score, patterns, bench, healing."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from kaizen.errors import DEBUG_ENV, UserError, report
from streams.logging import configure_logging


class _ErrorContract(TyperGroup):
    """Every command's failures end as one `error: <what> — <what to do>` line (exit 2 when the user can fix
    it, 1 for a bug) with the traceback in the log file: see kaizen/errors.py and README "Errors"."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _USAGE:  # usage errors and exits: typer reports them (exit 2 for usage, as documented)
            raise
        except Exception as exc:  # noqa: BLE001 - reported as one line; the traceback goes to the log
            raise typer.Exit(report(exc)) from None


_USAGE: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, TyperException)


app = typer.Typer(
    name="kaizen",
    help="Kafka-native continuous-improvement loop for services that report to AWS CloudWatch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_ErrorContract,
)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Print the traceback of an error too "
                                                               "(always written to <data dir>/logs/errors.log)")] = False
          ) -> None:
    """Kafka-native continuous-improvement loop for services that report to AWS CloudWatch."""
    if debug:
        os.environ[DEBUG_ENV] = "1"  # children of `kaizen run` inherit it


def _fail(message: str, todo: str | None = None) -> NoReturn:
    if todo is None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
    raise UserError(message, todo)


def _settings():  # type: ignore[no-untyped-def]
    from streams.settings import get_settings

    settings = get_settings()  # a ValidationError becomes "error: invalid configuration: VAR=...: ..." (exit 2)
    if settings.kaizen_detectors:
        _check_detectors(settings.kaizen_detectors, settings.kaizen_detector_checkpoint_max_bytes, "KAIZEN_DETECTORS")
    return settings


def _check_detectors(families: dict[str, str], max_bytes: int, what: str) -> None:
    """KAIZEN_DETECTORS: every spec must build a River anomaly detector whose checkpoint fits (at start)."""
    import json

    from agents.scoring.logic.registry import DetectorConfigError, parse_detectors

    try:
        parse_detectors(families, max_bytes)
    except DetectorConfigError as exc:
        raise UserError(f"invalid configuration: {what}={json.dumps(families)}: {exc}",
                        "give each metric family a registry name (kaizen, gaussian, hst, sad, pad) or "
                        "river.<module>.<Class>(literal arguments); see docs/detection.md") from None


def _broker(settings, hint: str) -> str:  # type: ignore[no-untyped-def]
    """The configured bootstrap servers, after one of them answered within KAIZEN_CONNECT_WAIT_SECONDS."""
    from kaizen.preflight import wait_for_broker

    if not settings.kafka_bootstrap_servers:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set", hint)
    wait_for_broker(settings.kafka_bootstrap_servers, settings.kaizen_connect_wait_seconds)
    return str(settings.kafka_bootstrap_servers)


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
    from kaizen.run import run_service

    raise typer.Exit(run_service(_settings, workers=workers, demo=demo, scenario=scenario, mcp=mcp,
                                 connectors=connectors, stop_after=stop_after))


@app.command()
def worker(loglevel: Annotated[str, typer.Option(help="debug|info|warning")] = "info") -> None:
    """One Faust worker joining the configured consumer group (KAFKA_BOOTSTRAP_SERVERS)."""
    configure_logging()
    settings = _settings()
    _broker(settings, "set it to the cluster's bootstrap servers (`kaizen run` starts an embedded broker and "
                      "its workers; `kaizen worker` joins one)")
    from kaizen.worker import run_worker

    sys.argv = [sys.argv[0], "worker"]  # Faust's Worker parses argv; give it nothing of ours
    run_worker(loglevel)


@app.command()
def connect(once: Annotated[bool, typer.Option(help="Poll every source once and exit")] = False) -> None:
    """The CloudWatch connectors as their own process (publishes to the raw telemetry topics)."""
    configure_logging()
    settings = _settings()
    _broker(settings, "set it to the cluster's bootstrap servers (`kaizen run` prints the embedded broker's)")
    if settings.aws_endpoint_url:
        from kaizen.preflight import check_aws_endpoint

        check_aws_endpoint(settings.aws_endpoint_url, settings.kaizen_connect_wait_seconds)
    from kaizen.connect import run_connectors

    asyncio.run(run_connectors(settings, once=once))


@app.command("mcp")
def mcp_cmd(stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP over stdio (desktop clients)")] = False) -> None:
    """The MCP server: streamable HTTP on SELF_BUILDING_MCP_PORT at /mcp (+ /health, /metrics, dashboard), or stdio."""
    configure_logging(stderr=True)
    settings = _settings()
    _broker(settings, "point the MCP server at the cluster (`kaizen run` prints the embedded broker's address)")
    if not stdio:
        from kaizen.preflight import check_port_free

        check_port_free(settings.self_building_mcp_host, settings.self_building_mcp_port,
                        "SELF_BUILDING_MCP_PORT", "the MCP server")
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
    detector: Annotated[str, typer.Option("--detector", help="registry name or River expression "
                                          "(as in KAIZEN_DETECTORS)")] = "kaizen",
) -> None:
    """Replay a series through the live anomaly detector (backtest); one output row per input row."""
    from kaizen.preflight import check_input, check_output

    check_input(input, "--input", "CSV file with a header timestamp,value")
    check_output(output, "--output")
    from kaizen.replay import score_csv

    _check_detectors({"*": detector}, 1 << 62, "--detector")
    try:
        n = score_csv(input, output, detector=detector)
    except ValueError as exc:
        _fail(str(exc), "fix that line of the input (timestamps ISO 8601 or epoch seconds, values numbers)")
    typer.echo(f"scored {n} rows -> {output}")


@app.command()
def patterns(
    input: Annotated[Path, typer.Option("--input", "-i", help="Text file: one log message per line")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write: LineId,EventId,EventTemplate")],
) -> None:
    """Replay log messages through the live pattern miner; write each line's cluster."""
    from kaizen.preflight import check_input, check_output

    check_input(input, "--input", "text file, one log message per line")
    check_output(output, "--output")
    from kaizen.replay import patterns_file

    n, k = patterns_file(input, output)
    typer.echo(f"{n} lines -> {k} patterns -> {output}")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="Short runs (about 12 minutes in all, 7 of them the fault lab's three cases)")] = False,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSON file to write")] = Path("bench.json"),
    only: Annotated[str | None, typer.Option(help="Comma-separated benchmark names")] = None,
) -> None:
    """Run the benchmarks (each beside its anchor) and write their JSON."""
    from benchmarks.runner import run_all
    from kaizen.preflight import check_output

    check_output(output, "--output")
    names = [n.strip() for n in only.split(",")] if only else None
    try:
        run_all(quick=quick, output=output, names=names)
    except KeyError as exc:
        from benchmarks.runner import BENCHMARKS

        _fail(f"unknown benchmark {exc}", f"use some of: {', '.join(BENCHMARKS)}")


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="latency-regression | bad-change | error-burst | alarm | all")] = "all",
    report: Annotated[Path | None, typer.Option(help="Write a JSON report of the scenario timelines")] = None,
    exit_after_cycle: Annotated[bool, typer.Option(help="Exit once the scenarios reached their verdicts")] = False,
    attach: Annotated[bool, typer.Option(help="Use the stack started by `kaizen run` (internal)")] = False,
) -> None:
    """The closed-loop demo: four fault-lab cases (kaizen/lab/cases/demo/), one simulated service each reporting
    to CloudWatch, run through the lab's engine: faults, and the loop fixing them (or rolling a bad change back)."""
    configure_logging()
    from kaizen.demo.cli import run_demo

    if report is not None:
        from kaizen.preflight import check_output

        check_output(report, "--report")
    settings = _settings()
    if settings.aws_endpoint_url:
        from kaizen.preflight import check_aws_endpoint

        check_aws_endpoint(settings.aws_endpoint_url, settings.kaizen_connect_wait_seconds)
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
    bootstrap = _broker(settings, "set it to the broker's address (`kaizen run` prints the embedded broker's)")
    from kaizen.tail import tail

    try:
        asyncio.run(tail(bootstrap, topic, not end, idle_exit))
    except ValueError as exc:
        _fail(str(exc), "name one of the topics in README \"Topics\" (docs/asyncapi.yaml lists them all)")
    except KeyboardInterrupt:
        pass


@app.command("produce")
def produce_cmd(
    topic: Annotated[str, typer.Argument(help="Topic, e.g. telemetry.metrics.raw")],
    key: Annotated[str | None, typer.Option("--key", "-k", help="Message key (raw telemetry: the tenant_id)")] = None,
) -> None:
    """Send each line of stdin as one message — like `kcat -P`."""
    settings = _settings()
    bootstrap = _broker(settings, "set it to the broker's address (`kaizen run` prints the embedded broker's)")
    from kaizen.tail import produce

    n = asyncio.run(produce(bootstrap, topic, key))
    typer.echo(f"sent {n} messages to {topic}", err=True)


@app.command("cloudwatch-export")
def cloudwatch_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout)")] = None,
) -> None:
    """Export kaizen's CloudWatch dashboard and alarm definitions (docs/observability.md) as JSON."""
    import orjson

    from kaizen.cloudwatch_export import export_definitions

    if output:
        from kaizen.preflight import check_output

        check_output(output, "--output")
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


@app.command("asyncapi")
def asyncapi_cmd(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout)")] = None,
) -> None:
    """The AsyncAPI 3 document of every topic (keys, compaction, JSON Schemas from the records); see docs/asyncapi.yaml."""
    from kaizen.asyncapi import render

    text = render()
    if output is None:
        sys.stdout.write(text)
        return
    from kaizen.preflight import check_output

    check_output(output, "--output")
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)


def _mount_healing() -> None:
    try:
        from kaizen.healing_cli import app as healing_app
    except ModuleNotFoundError:
        return
    app.add_typer(healing_app, name="healing", help="Self-healing triggers: status, triggers, actions, check, history")


_mount_healing()


def _mount_lab() -> None:
    from kaizen.lab.cli import lab_app

    app.add_typer(lab_app, name="lab", help="Fault lab: run fault cases through the loop and score them (docs/lab.md)")


_mount_lab()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
