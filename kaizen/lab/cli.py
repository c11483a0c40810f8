"""`kaizen lab`: run fault cases through the real loop and score them; validate case files; print the schema."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import orjson
import structlog
import typer
from rich.console import Console

from kaizen.lab.schema import CaseError, json_schema, library_dir, load_cases

lab_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
Paths = Annotated[list[Path] | None, typer.Argument(help="case files or directories (default: the shipped library)")]


def _cases(paths: list[Path] | None, console: Console) -> list[Any]:
    try:
        return load_cases(paths or [library_dir()])
    except CaseError as exc:
        console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@lab_app.command("validate")
def validate(paths: Paths = None) -> None:
    """Check case files against the format; each error names the file and the field."""
    console = Console(stderr=False)
    cases = _cases(paths, console)
    for c in cases:
        kind = c.fault.kind if c.fault else "none"
        console.print(f"ok  {c.name}  tenant {c.tenant_id}  fault {kind}  services "
                      f"{', '.join(s.name for s in c.services)}", markup=False, highlight=False)


@lab_app.command("schema")
def schema(output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None) -> None:
    """The case format as JSON Schema."""
    data = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2)
    if output:
        output.write_bytes(data)
    else:
        typer.echo(data.decode())


def run_cases(paths: list[Path] | None, report: Path | None, console: Console) -> dict[str, Any]:
    """Start the stack, run the cases side by side, score them, print and write the report."""
    from kaizen.lab.report import print_report, write_json
    from kaizen.lab.runner import Lab, namespaces
    from kaizen.lab.scoring import score_case, totals
    from kaizen.lab.stack import lab_stack

    cases = _cases(paths, console)
    started = time.monotonic()

    def say(msg: str) -> None:
        console.print(f"[{time.monotonic() - started:5.0f}s] {msg}", markup=False, highlight=False, soft_wrap=True)

    def progress(lab: Lab) -> None:
        n_imp = sum(len(lc.improvements) for lc in lab.cases.values())
        detected = sum(1 for lc in lab.cases.values() if any(i[0] >= 0 for i in lc.record.insights))
        say(f"lab t={lab.elapsed():.0f}s: {detected}/{len(lab.cases)} cases with insights after onset, "
            f"{n_imp} improvements, {lab.workload_errors} workload errors")

    horizon = max(c.onset + c.observe_seconds for c in cases)
    say(f"{len(cases)} cases; starting the stack (Tansu, moto, worker, connectors); about {horizon:.0f}s of workload")
    with lab_stack(namespaces(cases)) as (settings, dead):
        say(f"stack up: kafka {settings.kafka_bootstrap_servers}, aws {settings.aws_endpoint_url}")
        lab = Lab(settings, cases, say)
        records = asyncio.run(lab.run(progress, dead))
    scores = [score_case(r) for r in records]
    tot = totals(scores)
    kinds = {c.name: (c.fault.kind if c.fault else "") for c in cases}
    print_report(console, scores, tot, kinds)
    tot["wall_seconds"] = round(time.monotonic() - started, 1)
    if report:
        write_json(report, scores, tot, {"records": [_record(r) for r in records]})
        say(f"report: {report}")
    return {"totals": tot, "scores": scores}


def _record(r: Any) -> dict[str, Any]:
    d = asdict(r)
    d["oracle"] = r.oracle.model_dump()
    d.pop("series", None)  # per-second figures stay out of the report (the scores carry the summaries)
    return d


@lab_app.command("run")
def run(paths: Paths = None,
        report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None) -> None:
    """Run fault cases through the real loop (embedded broker, moto, worker, connectors, offline planner),
    all side by side, each its own tenant; print per-case results and totals."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    run_cases(paths, report, console)
