"""`kaizen demo`: start the stack, run the workload and scenarios, show their timelines live, write the report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from kaizen.demo.env import (
    APPROVER_TOKEN_ENV,
    OPERATOR_TOKEN_ENV,
    connectors_available,
    run_connectors_here,
)
from kaizen.demo.scenarios import Scenario, Timeline, TimelineTracker, select, ts_of
from kaizen.demo.workload.reporter import ServiceReporter
from kaizen.demo.workload.service import SimulatedService
from kaizen.demo.workload.steering import Steering
from kaizen.output import stdout_console
from streams import topics as t
from streams.settings import Settings

log = structlog.get_logger(__name__)

WARMUP_SECONDS = float(os.environ.get("KAIZEN_DEMO_WARMUP_SECONDS", "45"))  # detectors need a baseline
TIMEOUT_SECONDS = float(os.environ.get("KAIZEN_DEMO_TIMEOUT_SECONDS", "420"))
SETTLE_SECONDS = 10.0  # after a verdict: long enough to measure the latency it leaves behind
RETRIGGER_SECONDS = 20.0
MIN_FAULT_AGE_SECONDS = 16.0  # deploy lands ≈ BASELINE_WINDOW_SECONDS after the fault
TRACKED = (t.INSIGHTS, t.OPPORTUNITIES, t.IMPROVEMENT_EVENTS, t.CLEAN_TOPICS["metric"])


def now() -> datetime:
    return datetime.now(UTC)


def _rel(tl: Timeline, ts: datetime | None) -> str:
    if ts is None or tl.fault_injected_at is None:
        return ""
    return f"+{(ts - tl.fault_injected_at).total_seconds():.0f}s"


def render(tracker: TimelineTracker, started: datetime) -> Table:
    """The live table: one row per scenario, times relative to its fault injection."""
    age = (now() - started).total_seconds()
    table = Table(title=f"kaizen closed-loop demo — {age:.0f}s", title_justify="left")
    for col in ("scenario", "tenant/service", "stage", "anomaly", "opportunity", "approved", "deployed",
                "verdict", "latency ms before → after"):
        table.add_column(col)
    for tl in tracker.timelines.values():
        f = tl.figures()
        lat = "" if f["latency_before_ms"] is None else f"{f['latency_before_ms']:.1f}"
        if f["latency_after_ms"] is not None and tl.verdict:
            lat += f" → {f['latency_after_ms']:.1f}"
        verdict = f"{tl.verdict} {_rel(tl, tl.verdict_at)}" if tl.verdict else ""
        if tl.verdict:
            verdict = ("[green]" if tl.verdict == tl.expected_verdict else "[red]") + verdict
        table.add_row(tl.scenario, f"{tl.tenant_id}/{tl.component}", tl.stage, _rel(tl, tl.first_anomaly_at),
                      _rel(tl, tl.opportunity_at), _rel(tl, tl.approval_at), _rel(tl, tl.deployed_at), verdict, lat)
    return table


class Demo:
    """The workload (one simulated service per scenario), the timeline tracker and the scenario drivers."""

    def __init__(self, settings: Settings, scenarios: list[Scenario], console: Console) -> None:
        import boto3

        self.settings = settings
        self.scenarios = scenarios
        self.console = console
        self.tracker = TimelineTracker(scenarios)
        kw: dict[str, Any] = {"region_name": settings.aws_region}
        if settings.aws_endpoint_url:
            kw["endpoint_url"] = settings.aws_endpoint_url
        cw, logs, ssm = boto3.client("cloudwatch", **kw), boto3.client("logs", **kw), boto3.client("ssm", **kw)
        self.services: dict[str, tuple[SimulatedService, ServiceReporter]] = {}
        for s in scenarios:
            svc = SimulatedService(s.profile, seed=s.seed, canary_fraction=settings.canary_fraction)
            rep = ServiceReporter(svc, cw, logs, ssm, namespace=settings.cloudwatch_namespace.split(",")[0].strip(),
                                  tenant_dimension=settings.cloudwatch_tenant_dimension)
            self.services[s.name] = (svc, rep)
        self.started = now()
        self.changed = asyncio.Event()
        self.workload_errors = 0

    def say(self, tl: Timeline, message: str) -> None:
        self.console.print(f"[bold]{tl.scenario}[/bold] {_rel(tl, now()) or ''} {escape(message)}")

    # --- the workload --------------------------------------------------------------------------------
    async def setup(self) -> None:
        for s in self.scenarios:
            _svc, rep = self.services[s.name]
            await rep.setup()
            if s.alarm:
                await rep.put_alarm(s.alarm.name, s.alarm.metric_name, s.alarm.threshold, s.alarm.evaluation_periods)

    async def workload(self) -> None:
        """Every second: read parameters from SSM, serve a second of traffic, report it."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            ts = now().replace(microsecond=0)
            results = await asyncio.gather(*(self._tick(name, ts) for name in self.services), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    if not isinstance(r, Exception):
                        raise r
                    self.workload_errors += 1
                    log.warning("workload tick failed", error=str(r)[:200])
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _tick(self, name: str, ts: datetime) -> None:
        svc, rep = self.services[name]
        await rep.read_parameters()
        tick = svc.tick(ts)
        await rep.report(tick)
        tl = self.tracker.timelines[name]
        tl.latency.append((ts, tick.latency_ms))
        tl.error_rate.append((ts, tick.error_rate_pct))
        if tick.canary_latency_ms is not None:
            tl.canary_latency.append((ts, tick.canary_latency_ms))

    # --- following the loop --------------------------------------------------------------------------
    async def follow(self) -> None:
        """Read insights, opportunities and improvement events from the beginning, forever."""
        consumer = AIOKafkaConsumer(*TRACKED, bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                    group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, msgs in batches.items():
                    for m in msgs:
                        if m.value is None:
                            continue
                        if tp.topic == t.CLEAN_TOPICS["metric"]:
                            self.tracker.observe_metrics(m.value, ts_of(m.timestamp, now()))
                            continue
                        tl = self.tracker.observe(tp.topic, m.value, ts_of(m.timestamp, now()))
                        if tl is not None:
                            self.changed.set()
        finally:
            await consumer.stop()

    async def until(self, tl: Timeline, ready: Any, timeout: float) -> bool:
        """Wait until `ready(tl)` holds (re-checked on every tracked change), at most `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready(tl):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 1.0))
        return True

    # --- one scenario -----------------------------------------------------------------------------------
    async def drive(self, s: Scenario, steering: Steering) -> None:
        tl = self.tracker.timelines[s.name]
        svc, _rep = self.services[s.name]
        await asyncio.sleep(max(0.0, WARMUP_SECONDS - (now() - self.started).total_seconds()))
        svc.inject(s.fault)
        tl.fault_injected_at, tl.stage = now(), "fault injected"
        self.say(tl, f"fault injected: {s.fault_label}")
        if not await self.until(tl, lambda x: x.first_anomaly_at is not None, 120):
            tl.error = "no insight within 120 s of the fault"
        else:
            self.say(tl, f"first insight — {tl.first_anomaly}")
        if await self.until(tl, lambda x: x.opportunity_at is not None, 90):
            self.say(tl, f"opportunity — {tl.opportunity}")
        # Like an operator reading the dashboard: trigger once the faulted state is established, so the
        # cycle's baseline (BASELINE_WINDOW_SECONDS before deploy) is the faulted service, not the healthy one.
        await asyncio.sleep(max(0.0, MIN_FAULT_AGE_SECONDS - (now() - tl.fault_injected_at).total_seconds()))
        for attempt in range(6):
            if s.trigger == "manual" or attempt > 0:
                tl.cycle_triggered_at = tl.cycle_triggered_at or now()
                how = await steering.trigger(s.profile.tenant_id, s.profile.component if s.focus_problem else None,
                                             s.focus_problem)
                self.say(tl, f"cycle triggered ({how})")
            else:
                self.say(tl, "waiting for the critical alarm's emergency cycle")
            wait = RETRIGGER_SECONDS if s.trigger == "manual" or attempt > 0 else 90.0
            if not await self.until(tl, lambda x: x.improvement_id is not None
                                    and x.improvement_status not in ("failed", "rejected"), wait):
                continue
            if not await self.until(tl, lambda x: x.improvement_status in (
                    "awaiting_approval", "deploying", "monitoring", "completed", "rolled_back", "failed"), 60):
                continue
            if tl.improvement_status == "awaiting_approval" and tl.improvement_id:
                self.say(tl, f"improvement {tl.improvement_id} awaits approval")
                asked = now()  # the decision's time; the call returns after the worker may have acted on it
                who = await steering.approve(tl.improvement_id, s.profile.tenant_id,
                                             f"demo: approve the {s.name} fix")
                self.tracker.mark_approved(s.name, asked, who)
                self.say(tl, f"approved by {who}")
            if await self.until(tl, lambda x: x.verdict is not None or x.improvement_status in ("failed", "rejected"),
                                180) and tl.verdict is not None:
                break
        if tl.verdict is None:
            return
        plan = ", ".join(f"{c.get('parameter')} {c.get('old')}→{c.get('new')}" for c in tl.changes)
        self.say(tl, f"verdict {tl.verdict} (expected {tl.expected_verdict}) of [{plan}]; "
                     f"degradation {tl.degradation if tl.degradation is None else round(tl.degradation, 3)}")
        if float(tl.baseline.get("samples", 0.0)) < 3:
            self.say(tl, f"[warning] the cycle judged against a baseline of {tl.baseline.get('samples', 0)} samples")
        await asyncio.sleep(SETTLE_SECONDS)
        tl.done_at, tl.stage = now(), f"done: {tl.verdict}"
        f = tl.figures()
        self.say(tl, f"latency {f['latency_before_ms']} ms before → {f['latency_after_ms']} ms after "
                     f"({f['latency_change_pct']} %); error rate {f['error_rate_before_pct']} % → "
                     f"{f['error_rate_after_pct']} %")
        self.changed.set()


def write_report(tracker: TimelineTracker, path: Path | None, extra: dict[str, Any]) -> None:
    if path is None:
        return
    data = {**tracker.report(), **extra, "written_at": now().isoformat()}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


async def run_scenarios(settings: Settings, scenarios: list[Scenario], report: Path | None, exit_after_cycle: bool,
                        console: Console, live: bool) -> int:
    """Run the workload and drivers; return 0 when every scenario reached its verdict (exit_after_cycle),
    1 on timeout; without exit_after_cycle keep serving until cancelled (SIGINT/SIGTERM)."""
    demo = Demo(settings, scenarios, console)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks=1)
    await producer.start()
    mcp_url = f"http://{settings.self_building_mcp_host}:{settings.self_building_mcp_port}/mcp"
    steering = Steering(producer, mcp_url, os.environ.get(OPERATOR_TOKEN_ENV), os.environ.get(APPROVER_TOKEN_ENV))
    tasks: list[asyncio.Task[Any]] = []
    rc = 0
    try:
        await demo.setup()
        tasks = [asyncio.create_task(demo.workload(), name="workload"),
                 asyncio.create_task(demo.follow(), name="follow")]
        if not connectors_available():
            console.print("`kaizen connect` is not in this build: the demo polls CloudWatch itself")
            tasks.append(asyncio.create_task(run_connectors_here(settings), name="connectors"))
        console.print(f"workload: {len(scenarios)} services reporting every second to {settings.aws_endpoint_url}; "
                      f"faults in {WARMUP_SECONDS:.0f}s")
        await steering.wait_for_mcp()
        console.print(f"steering through: {steering.via}")
        drivers = [asyncio.create_task(demo.drive(s, steering), name=s.name) for s in scenarios]
        tasks += drivers
        live_ctx = Live(render(demo.tracker, demo.started), console=console, refresh_per_second=2) if live \
            else contextlib.nullcontext()
        with live_ctx as lv:
            done_at: float | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT_SECONDS
            while True:
                if lv is not None:
                    lv.update(render(demo.tracker, demo.started))
                for task in tasks[:3]:
                    if task.done() and task.get_name() in ("workload", "follow", "connectors"):
                        task.result()  # the workload or the follower died: raise its error
                if all(d.done() for d in drivers) and done_at is None:
                    done_at = loop.time()
                    write_report(demo.tracker, report, {"steering": steering.via})
                    missing = [tl.scenario for tl in demo.tracker.timelines.values() if tl.verdict is None]
                    if missing:
                        console.print(f"[red]no verdict for {', '.join(missing)}[/red]")
                        rc = 1
                    if exit_after_cycle:
                        break
                    console.print("all scenarios done; the workload keeps serving (Ctrl-C to stop)")
                if exit_after_cycle and loop.time() > deadline:
                    stuck = {tl.scenario: tl.stage for tl in demo.tracker.timelines.values() if tl.done_at is None}
                    console.print(f"[red]timeout after {TIMEOUT_SECONDS:.0f}s; not done: {stuck}[/red]")
                    rc = 1
                    break
                await asyncio.sleep(0.5)
        if report:
            write_report(demo.tracker, report, {"steering": steering.via})
            console.print(f"report: {report}")
        console.print(render(demo.tracker, demo.started))
    finally:
        # A SIGTERM now (kaizen run stopping its children after Ctrl-C) must not cut the cleanup short;
        # _serve restores the handler afterwards.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if report and rc == 0:
            write_report(demo.tracker, report, {"steering": steering.via})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
    return rc


def run_demo(scenario: str, report: Path | None, exit_after_cycle: bool, attach: bool) -> int:
    """`kaizen demo`: with `attach`, use the stack of the parent `kaizen run`; else start it here."""
    # The demo talks to people: its own progress lines, and only warnings from the libraries underneath.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    console = stdout_console()  # piped (or under `kaizen run | tee`): whole table rows, no cut cells
    try:
        scenarios = select(scenario)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if attach:
        from streams.settings import get_settings

        settings = get_settings()
        report = report or settings.kaizen_data_dir / "demo-report.json"
        return _serve(settings, scenarios, report, exit_after_cycle, console, live=console.is_terminal)
    from kaizen.demo.env import demo_stack

    with demo_stack(console) as settings:
        return _serve(settings, scenarios, report, exit_after_cycle, console, live=console.is_terminal)


def _serve(settings: Settings, scenarios: list[Scenario], report: Path | None, exit_after_cycle: bool,
           console: Console, live: bool) -> int:
    """asyncio.run with SIGTERM treated like Ctrl-C, so every `finally` runs and nothing is left behind."""
    def _term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    try:
        return asyncio.run(run_scenarios(settings, scenarios, report, exit_after_cycle, console, live))
    except KeyboardInterrupt:
        console.print("stopped")
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
