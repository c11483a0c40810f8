"""`kaizen demo`: the demo's four scenarios are fault-lab cases (kaizen/lab/cases/demo/) run through the lab's
engine — its simulator, runner, follower, operator and scoring — on the demo's stack, steered through MCP as
two principals; it narrates each step, prints each scenario's verdict with its figures, writes the report
and serves on until Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from kaizen.demo.env import APPROVER_TOKEN_ENV, OPERATOR_TOKEN_ENV, connectors_available, run_connectors_here
from kaizen.demo.workload.steering import Steering
from kaizen.lab.runner import VERDICTS, Lab, LabCase, LabTiming, namespaces
from kaizen.lab.schema import Case, demo_dir, load_cases
from kaizen.lab.scoring import CaseRecord, score_case, window
from kaizen.output import stdout_console
from streams.settings import Settings

log = structlog.get_logger(__name__)

SCENARIOS = ("latency-regression", "bad-change", "error-burst", "alarm")  # the order they are shown in
ALL = "all"
SETTLE_SECONDS = 10.0  # after a verdict: long enough to measure the latency it leaves behind
FIGURE_WINDOW = 10.0  # the figures are means over this many seconds of the model's (noise-free) values
STATUS_EVERY = 30.0
RETRIES = 5  # cycles triggered again, without new evidence, after one that ended without a verdict


def _env_seconds(name: str) -> float | None:
    raw = os.environ.get(name)
    return float(raw) if raw else None


def select(name: str) -> list[Case]:
    """The demo's cases named (a scenario or 'all'), paced by KAIZEN_DEMO_WARMUP_SECONDS (the onset) and
    KAIZEN_DEMO_TIMEOUT_SECONDS (onset + observation) when set; ValueError with the valid names otherwise."""
    cases = {c.name: c for c in load_cases([demo_dir()])}
    order = [n for n in SCENARIOS if n in cases] + sorted(set(cases) - set(SCENARIOS))
    if name != ALL and name not in cases:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(order)} or {ALL}")
    chosen = [cases[n] for n in order] if name == ALL else [cases[name]]
    return [paced(c, _env_seconds("KAIZEN_DEMO_WARMUP_SECONDS"), _env_seconds("KAIZEN_DEMO_TIMEOUT_SECONDS"))
            for c in chosen]


def paced(case: Case, warmup: float | None, timeout: float | None) -> Case:
    """The case with its fault's onset at `warmup` and its observation ending at `timeout` (when given)."""
    if warmup is not None and case.fault is not None:
        case = case.model_copy(update={"fault": case.fault.model_copy(update={"onset_seconds": warmup})})
    if timeout is not None:
        case = case.model_copy(update={"observe_seconds": max(60.0, timeout - case.onset)})
    return case


# --- what a scenario ended with ----------------------------------------------------------------------
def _mean(series: list[tuple[float, float, float, float]], metric: str, start: float | None,
          end: float | None) -> float | None:
    if start is None or end is None or end <= start:
        return None
    v = window(series, metric, start, end)
    return None if v is None else round(v, 2)


def outcome(lab: Lab, lc: LabCase) -> dict[str, Any]:
    """One scenario's timeline and figures (times as ISO timestamps; the figures are the model's values on
    the oracle's component) and its lab score."""
    c, rec = lc.case, lc.record
    onset_wall = lab.t0_wall + timedelta(seconds=c.onset)

    def at(rel: float | None) -> str | None:
        return None if rel is None else (onset_wall + timedelta(seconds=rel)).isoformat()

    comp = c.oracle.component or c.services[0].name
    series = rec.series.get(comp, [])
    since_fault = [i for i in lc.improvements.values() if i.started_at >= 0]
    imp = lc.verdict() or (max(since_fault, key=lambda i: i.started_at) if since_fault else None)
    st: dict[str, Any] = lc.steps.get(imp.improvement_id, {}) if imp else {}
    deployed = min((v for k, v in st.items() if k in ("deploying", "monitoring")), default=None)
    verdict_at = st.get("completed", st.get("rolled_back"))
    end = series[-1][0] + 1.0 if series else None
    before_end = deployed if deployed is not None else verdict_at
    after_start = max(verdict_at, end - FIGURE_WINDOW) if verdict_at is not None and end is not None else None
    fig = {
        "latency_healthy_ms": _mean(series, "latency", -FIGURE_WINDOW, 0.0),
        "latency_before_ms": _mean(series, "latency", (before_end or 0) - FIGURE_WINDOW, before_end),
        "latency_during_change_ms": _mean(series, "latency", st.get("stage_full"), verdict_at),
        "latency_after_ms": _mean(series, "latency", after_start, end),
        "error_rate_before_pct": _mean(series, "error_rate", (before_end or 0) - FIGURE_WINDOW, before_end),
        "error_rate_after_pct": _mean(series, "error_rate", after_start, end),
    }
    b, a = fig["latency_before_ms"], fig["latency_after_ms"]
    fig["latency_change_pct"] = round((a - b) / b * 100, 1) if a is not None and b else None
    lags = sorted(lc.telemetry_lag)
    verdict = st.get("verdict")
    expected = c.expect.verdict if c.expect else None
    return {
        "scenario": c.name, "tenant_id": c.tenant_id, "component": comp, "description": c.description.strip(),
        "fault": c.fault.label if c.fault else None, "expected_verdict": expected,
        "fault_injected_at": onset_wall.isoformat(),
        "first_anomaly_at": at(next((i[0] for i in rec.insights if i[0] >= 0), None)),
        "first_anomaly": lc.first_insight,
        "opportunity_at": at(lc.first_opportunity[0] if lc.first_opportunity else None),
        "opportunity": lc.first_opportunity[1] if lc.first_opportunity else "",
        "improvement_id": imp.improvement_id if imp else None, "improvement_status": imp.status if imp else None,
        "changes": imp.changes if imp else [],
        "approval_at": at(st.get("approved")), "approval": st.get("approved_by"),
        "deployed_at": at(deployed), "full_deployed_at": at(st.get("stage_full")),
        "verdict_at": at(verdict_at), "verdict": verdict, "degradation": st.get("degradation"),
        "verdict_reason": st.get("reason", ""), "baseline": st.get("baseline", {}),
        "rollback_at": at(st.get("rolled_back")),
        **fig,
        "telemetry_lag_seconds": {"p50": round(lags[len(lags) // 2], 2), "max": round(lags[-1], 2),
                                  "points": len(lags)} if lags else None,
        "met_expectation": (verdict == expected) if verdict and expected else None,
        "improvements": [{"improvement_id": i.improvement_id, "status": i.status, "changes": i.changes,
                          "started_s": i.started_at, "verdict_s": i.verdict_at} for i in lc.improvements.values()],
        "score": score_case(rec).as_dict(),
    }


def _n(v: Any, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def _plan(changes: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c.get('parameter')} {c.get('old')}→{c.get('new')}" for c in changes)


def print_outcomes(console: Console, outcomes: list[dict[str, Any]]) -> None:
    """One line per scenario (its verdict and figures), then the table."""
    shown = {"keep": "kept", "rollback": "rolled back"}
    for o in outcomes:
        if o["verdict"] is None:
            console.print(f"{o['scenario']}: no verdict ({o['improvement_status'] or 'no improvement'})",
                          markup=False, highlight=False)
            continue
        ok = "as expected" if o["met_expectation"] else f"EXPECTED {shown.get(o['expected_verdict'] or '', '-')}"
        console.print(f"{o['scenario']}: {shown.get(o['verdict'], o['verdict'])} ({ok}) [{_plan(o['changes'])}]; "
                      f"latency {_n(o['latency_before_ms'])} ms before → {_n(o['latency_after_ms'])} ms after "
                      f"({_n(o['latency_change_pct'], ' %')}); error rate {_n(o['error_rate_before_pct'])} % → "
                      f"{_n(o['error_rate_after_pct'])} %", markup=False, highlight=False, soft_wrap=True)
    table = Table(title="kaizen closed-loop demo (seconds after each fault; figures: the model's values)",
                  title_justify="left")
    for col in ("scenario", "tenant/service", "insight", "opportunity", "approved", "deployed", "verdict",
                "expected", "latency ms before → after", "errors % before → after"):
        table.add_column(col)

    def rel(o: dict[str, Any], key: str) -> str:
        a, b = o.get(key), o["fault_injected_at"]
        return "" if not a else f"+{(datetime.fromisoformat(a) - datetime.fromisoformat(b)).total_seconds():.0f}"

    for o in outcomes:
        verdict = shown.get(o["verdict"] or "", "-")
        if o["verdict"]:
            verdict = ("[green]" if o["met_expectation"] else "[red]") + verdict + f" {rel(o, 'verdict_at')}"
        table.add_row(o["scenario"], f"{o['tenant_id']}/{o['component']}", rel(o, "first_anomaly_at"),
                      rel(o, "opportunity_at"), rel(o, "approval_at"), rel(o, "deployed_at"), verdict,
                      shown.get(o["expected_verdict"] or "", "-"),
                      f"{_n(o['latency_before_ms'])} → {_n(o['latency_after_ms'])}",
                      f"{_n(o['error_rate_before_pct'])} → {_n(o['error_rate_after_pct'])}")
    console.print(table)


def stage(lc: LabCase) -> str:
    """Where a scenario is, in a word or two."""
    if lc.done:
        verdict = lc.verdict()
        return f"done: {VERDICTS[verdict.status]}" if verdict else "done: no verdict"
    since_fault = [i for i in lc.improvements.values() if i.started_at >= 0]
    if not since_fault:
        return "opportunity" if lc.first_opportunity else ("anomaly detected" if lc.first_insight else "watching")
    latest = max(since_fault, key=lambda i: i.started_at)
    return latest.status.replace("_", " ")


def write_report(path: Path | None, outcomes: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    if path is None:
        return
    data = {"scenarios": {o["scenario"]: o for o in outcomes}, **extra,
            "written_at": datetime.now().astimezone().isoformat()}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


async def run_scenarios(settings: Settings, cases: list[Case], report: Path | None, exit_after_cycle: bool,
                        console: Console) -> int:
    """Run the cases through the lab's engine; return 0 when every scenario reached its verdict, 1 otherwise.
    Without exit_after_cycle the workload keeps serving after the verdicts until cancelled (SIGINT/SIGTERM)."""
    started = time.monotonic()

    def say(msg: str) -> None:
        console.print(f"[{time.monotonic() - started:4.0f}s] {msg}", markup=False, highlight=False, soft_wrap=True)

    mcp_url = f"http://{settings.self_building_mcp_host}:{settings.self_building_mcp_port}/mcp"

    def steering(producer: AIOKafkaProducer) -> Steering:
        return Steering(producer, mcp_url, os.environ.get(OPERATOR_TOKEN_ENV), os.environ.get(APPROVER_TOKEN_ENV))

    timing = LabTiming(stop_after_verdict=SETTLE_SECONDS, retries_without_verdict=RETRIES)
    lab = Lab(settings, cases, say, timing, steering=steering, track_lag=True)
    read = {n.strip() for n in settings.cloudwatch_namespace.split(",")}
    unread = [n for n in namespaces(cases) if n not in read]
    if unread:
        say(f"warning: the services report to the namespaces {', '.join(unread)}, which CLOUDWATCH_NAMESPACE "
            f"({settings.cloudwatch_namespace}) leaves out: the connectors will not read them")

    async def ready(lab: Lab) -> None:
        onset = min(c.onset for c in cases)
        say(f"workload: {sum(len(c.services) for c in cases)} services of {len(cases)} scenarios reporting every "
            f"second to {settings.aws_endpoint_url}; faults in {onset:.0f}s")
        assert lab.steering is not None
        await lab.steering.wait_for_mcp()
        say(f"steering through: {lab.steering.via}")

    last = 0.0

    def progress(lab: Lab) -> None:
        nonlocal last
        if lab.elapsed() - last >= STATUS_EVERY:
            last = lab.elapsed()
            say("status: " + "; ".join(f"{lc.case.name} {stage(lc)}" for lc in lab.cases.values()))

    rc = 0

    def finish(records: list[CaseRecord]) -> None:
        nonlocal rc
        outcomes = [outcome(lab, lc) for lc in lab.cases.values()]
        print_outcomes(console, outcomes)
        write_report(report, outcomes, {"steering": lab.steering.via if lab.steering else None})
        if report:
            say(f"report: {report}")
        missing = [o["scenario"] for o in outcomes if o["verdict"] is None]
        if missing:
            say(f"no verdict for {', '.join(missing)}")
            rc = 1
        if not exit_after_cycle:
            say("all scenarios done; the workload keeps serving (Ctrl-C to stop)")

    extra: list[asyncio.Task[Any]] = []
    if not connectors_available():
        say("`kaizen connect` is not in this build: the demo polls CloudWatch itself")
        extra.append(asyncio.create_task(run_connectors_here(settings), name="connectors"))
    try:
        if exit_after_cycle:
            finish(await lab.run(progress, ready=ready))
        else:
            await lab.run(progress, ready=ready, done=finish)
    finally:
        for task in extra:
            task.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
    return rc


def run_demo(scenario: str, report: Path | None, exit_after_cycle: bool, attach: bool) -> int:
    """`kaizen demo`: with `attach`, use the stack of the parent `kaizen run`; else start it here."""
    # The demo talks to people: its own progress lines, and only warnings from the libraries underneath.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = stdout_console()  # piped (or under `kaizen run | tee`): whole table rows, no cut cells
    try:
        cases = select(scenario)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if attach:
        from streams.settings import get_settings

        settings = get_settings()
        report = report or settings.kaizen_data_dir / "demo-report.json"
        return _serve(settings, cases, report, exit_after_cycle, console)
    from kaizen.demo.env import demo_stack

    with demo_stack(console) as settings:
        return _serve(settings, cases, report, exit_after_cycle, console)


def _serve(settings: Settings, cases: list[Case], report: Path | None, exit_after_cycle: bool,
           console: Console) -> int:
    """asyncio.run with SIGTERM treated like Ctrl-C: the main task is cancelled, so every `finally` runs and
    nothing is left behind. On Ctrl-C in a terminal the demo gets SIGINT and, moments later, SIGTERM from
    `kaizen run` stopping its children: a signal that arrives while the task is already being cancelled is
    ignored, so it cannot cut the cleanup short. (Raising KeyboardInterrupt from a SIGTERM handler did: it
    broke out of the loop mid-cleanup and left the coroutine to be finalised with no loop, a traceback.)"""
    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None

        def _term() -> None:
            if not task.cancelling():
                task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _term)
        return await run_scenarios(settings, cases, report, exit_after_cycle, console)

    old = signal.getsignal(signal.SIGTERM)
    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("stopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
