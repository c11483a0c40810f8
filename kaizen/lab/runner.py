"""Runs cases side by side through the real loop: workload to moto, follow the topics, play operator and approver.

`kaizen lab run` and `kaizen demo` both run their cases here: the demo with its own steering (MCP as two
principals), ending each case shortly after a verdict that settles it (`LabTiming.stop_after_verdict`,
`Lab.settles`) and serving on until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.opportunities.logic.impact import sort_key
from kaizen.demo.workload.reporter import SSM_PREFIX, ServiceReporter, split_parameters
from kaizen.demo.workload.service import Tick
from kaizen.demo.workload.steering import Steering
from kaizen.lab.model import metric_of
from kaizen.lab.schema import Case, Knob
from kaizen.lab.scoring import PRE_WINDOW, CaseRecord, ImprovementRecord, window
from kaizen.lab.sim import CaseSim
from streams import topics as t
from streams.records import ImprovementOpportunity
from streams.settings import Settings

log = structlog.get_logger(__name__)
TRACKED = (t.INSIGHTS, t.OPPORTUNITIES, t.IMPROVEMENT_EVENTS)
VERDICTS = {"completed": "keep", "rolled_back": "rollback"}
SETTLE_SHARE = 0.25  # a kept change settles a case when it takes back this share of the fault's deviation
TERMINAL = {"completed", "rolled_back", "failed", "rejected", "conflict"}  # conflict: left as someone else set it
OPERATOR, APPROVER = "lab-operator", "lab-approver"
SSM_EVERY_TICKS = 2  # knobs are read back from SSM every N seconds (moto is shared by every case)
SUMMARY_EVERY_TICKS = 5  # the INFO summary log line every N seconds; error lines every second


def namespaces(cases: list[Case]) -> list[str]:
    """The namespaces the lab reports to: one per service name (see `Lab.__init__`)."""
    return sorted({s.name for c in cases for s in c.services})


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LabTiming:
    """When the operator acts: first cycle after the onset, pause between cycles, time a cycle needs."""

    first_cycle_after: float = 10.0
    between_cycles: float = 5.0
    cycle_needs: float = 90.0  # planning, 60 s of canary and full monitoring, and a margin
    stop_after_verdict: float | None = None  # the demo: a case ends this long after a verdict that settles it
    # the demo: after a cycle that started nothing, or an improvement that ended without a verdict (failed,
    # rejected, conflict), trigger again without waiting for new evidence (at most this many times)
    retries_without_verdict: int = 0


class LabError(RuntimeError):
    """The lab cannot go on (a stack process stopped)."""


class _Bound:
    """One service of a case as the reporter sees it (tenant/component, knobs read from SSM go to the sim)."""

    def __init__(self, sim: CaseSim, tenant_id: str, component: str) -> None:
        self.sim, self._name = sim, component
        self.profile = type("P", (), {"tenant_id": tenant_id, "component": component})()

    def configure(self, parameters: dict[str, Any], canary: dict[str, Any]) -> None:
        self.sim.configure(self._name, parameters, canary)


@dataclass
class LabCase:
    """One case in the running lab: its simulator, reporters, what was observed, and the operator's state."""

    case: Case
    sim: CaseSim
    reporters: dict[str, ServiceReporter]
    record: CaseRecord
    onset_at: float = 0.0  # loop time of the onset
    cycles: int = 0
    cycle_ids: list[str] = field(default_factory=list)
    improvements: dict[str, ImprovementRecord] = field(default_factory=dict)
    opportunities: dict[str, ImprovementOpportunity] = field(default_factory=dict)
    approved: set[str] = field(default_factory=set)
    done: bool = False
    # what a person watching sees, per improvement: seconds after the onset of each step, who approved,
    # the verdict and its figures (the demo's narration and report)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_insight: str = ""
    first_opportunity: tuple[float, str] | None = None
    telemetry_lag: list[float] = field(default_factory=list)  # metric time → clean topic (track_lag)

    def verdict(self) -> ImprovementRecord | None:
        """The improvement started after the onset whose verdict settled the case (see `Lab.settles`), else
        the latest one monitoring judged (kept or rolled back); None before any verdict."""
        judged = sorted((i for i in self.improvements.values()
                         if i.status in VERDICTS and i.verdict_at is not None and i.started_at >= 0),
                        key=lambda i: i.verdict_at or 0.0)
        settled = [i for i in judged if self.steps.get(i.improvement_id, {}).get("settles")]
        return settled[0] if settled else (judged[-1] if judged else None)

    def settled(self) -> bool:
        return any(self.steps.get(i.improvement_id, {}).get("settles")
                   for i in self.improvements.values() if i.started_at >= 0)


class Lab:
    """All cases in one stack: one workload loop, one follower, one operator per case."""

    def __init__(self, settings: Settings, cases: list[Case], say: Callable[[str], None],
                 timing: LabTiming | None = None, steering: Callable[[AIOKafkaProducer], Steering] | None = None,
                 track_lag: bool = False) -> None:
        """`steering` makes the operator's and approver's steering once the producer runs (default: Commands
        on the broker as lab-operator / lab-approver); `track_lag` also reads the clean metric topic to
        measure each tenant's telemetry lag (the demo reports it)."""
        import boto3

        self.settings, self.say = settings, say
        self.timing = timing or LabTiming()
        self.make_steering = steering or (lambda producer: Steering(producer, None, None, None, OPERATOR, APPROVER))
        self.steering: Steering | None = None
        self.track_lag = track_lag
        kw: dict[str, Any] = {"region_name": settings.aws_region}
        if settings.aws_endpoint_url:
            kw["endpoint_url"] = settings.aws_endpoint_url
        self.cw, self.logs, self.ssm = (boto3.client(n, **kw) for n in ("cloudwatch", "logs", "ssm"))
        self.cases: dict[str, LabCase] = {}
        self.by_tenant: dict[str, LabCase] = {}
        for c in cases:
            sim = CaseSim(c, canary_fraction=settings.canary_fraction)
            # A service's metrics go to a namespace named after it with the tenant as their only dimension
            # (the component is then the namespace, as the log group's last segment names it for logs):
            # moto's ListMetrics repeats a metric of two or more dimensions once per stored point, which
            # makes every poll slower than the last.
            reps = {s.name: ServiceReporter(_Bound(sim, c.tenant_id, s.name), self.cw, self.logs, self.ssm,
                                            namespace=s.name, tenant_dimension=settings.cloudwatch_tenant_dimension,
                                            log_group_prefix=f"/kaizen/demo/{c.tenant_id}",
                                            parameters=dict(s.knobs))
                    for s in c.services}
            for rep in reps.values():
                rep.dimensions = [{"Name": settings.cloudwatch_tenant_dimension, "Value": c.tenant_id}]
            lc = LabCase(c, sim, reps, CaseRecord(c.name, c.oracle, end=c.observe_seconds))
            self.cases[c.name] = lc
            self.by_tenant[c.tenant_id] = lc
        self.t0 = 0.0
        self.t0_wall = now()
        self.producer: AIOKafkaProducer | None = None
        self.workload_errors = 0
        self.ticks = 0

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    def rel(self, lc: LabCase) -> float:
        """Seconds since the case's onset."""
        return self.elapsed() - lc.case.onset

    # --- workload ---------------------------------------------------------------------------------
    async def setup(self) -> None:
        for lc in self.cases.values():
            for s in lc.case.services:
                rep = lc.reporters[s.name]
                await rep.setup()
                for a in s.alarms[:1]:  # the reporter evaluates one alarm per service
                    # the alarm also names the service: an alarm's component comes from its dimensions
                    tenant_only = rep.dimensions
                    rep.dimensions = [*tenant_only, {"Name": "service", "Value": s.name}]
                    try:
                        await rep.put_alarm(a.name, a.metric, a.threshold, a.periods)
                    finally:
                        rep.dimensions = tenant_only

    async def workload(self) -> None:
        """Every second: every case's services, reported in as few calls as the APIs allow (one
        PutMetricData per case, one GetParametersByPath per case every SSM_EVERY_TICKS seconds, log
        events only where there are lines): moto is one process shared with the connectors."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self._second(now().replace(microsecond=0), self.elapsed())
            except Exception as exc:  # noqa: BLE001 - a failed second is counted and the workload goes on
                self.workload_errors += 1
                log.warning("lab tick failed", error=str(exc)[:200])
            self.ticks += 1
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _second(self, ts: datetime, t_lab: float) -> None:
        cases = list(self.cases.values())
        if self.ticks % SSM_EVERY_TICKS == 0:
            await asyncio.gather(*(self._read_knobs(lc) for lc in cases))
        data: dict[str, list[dict[str, Any]]] = {}
        logs: list[tuple[ServiceReporter, Tick]] = []
        for lc in cases:
            ticks = lc.sim.tick(ts, t_lab, summary=self.ticks % SUMMARY_EVERY_TICKS == 0)
            rel = round(t_lab - lc.case.onset, 2)
            for name, (tick, expected) in ticks.items():
                lc.record.series.setdefault(name, []).append(
                    (rel, metric_of(expected, "latency"), metric_of(expected, "error_rate"),
                     metric_of(expected, "throughput")))
                rep = lc.reporters[name]
                # ActiveUsers is left out: fewer series keep moto's GetMetricData within the 1 s polls
                data.setdefault(rep.namespace, []).extend(
                    d for d in rep.metric_data(tick) if d["MetricName"] != "ActiveUsers")
                logs.append((rep, tick))
        calls = [asyncio.to_thread(self.cw.put_metric_data, Namespace=ns, MetricData=points[i:i + 1000])
                 for ns, points in data.items() for i in range(0, len(points), 1000)]
        for rep, tick in logs:
            if tick.logs:
                ms = int(tick.timestamp.timestamp() * 1000)
                calls.append(asyncio.to_thread(
                    self.logs.put_log_events, logGroupName=rep.log_group, logStreamName=rep.log_stream,
                    logEvents=[{"timestamp": ms, "message": line.message} for line in tick.logs]))
            if rep.alarm_name:
                calls.append(rep.evaluate_alarm(tick.error_rate_pct if rep.alarm_metric == "ErrorRate"
                                                else tick.latency_ms))
        for r in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(r, Exception):
                self.workload_errors += 1
                log.warning("lab report failed", error=str(r)[:200])

    async def _read_knobs(self, lc: LabCase) -> None:
        """The tenant's knobs (full and canary) from SSM in one paged call, handed to each service."""
        params: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Path": f"{SSM_PREFIX}/{lc.case.tenant_id}", "Recursive": True}
        while True:
            page = await asyncio.to_thread(self.ssm.get_parameters_by_path, **kwargs)
            params.extend(page.get("Parameters", []))
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        for name in lc.reporters:
            full, canary = split_parameters(f"{SSM_PREFIX}/{lc.case.tenant_id}/{name}", params)
            lc.sim.configure(name, full, canary)

    # --- following the loop -----------------------------------------------------------------------
    async def follow(self) -> None:
        """The one follower of the loop's topics (insights, opportunities, improvement events; with
        `track_lag` the clean metrics too), from the beginning, until cancelled."""
        topics = (*TRACKED, t.CLEAN_TOPICS["metric"]) if self.track_lag else TRACKED
        consumer = AIOKafkaConsumer(*topics, bootstrap_servers=self.settings.kafka_bootstrap_servers,
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
                            self.observe_lag(m.value, m.timestamp)
                        else:
                            self.observe(tp.topic, m.value)
        finally:
            await consumer.stop()

    def observe_lag(self, value: bytes, published_ms: int | None) -> None:
        """Telemetry lag of the cases' Latency points: their time → the worker publishing them clean."""
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        at = published_ms / 1000.0 if published_ms else now().timestamp()
        items = data.get("records", [data]) if isinstance(data, dict) else data if isinstance(data, list) else []
        for it in items:
            lc = self.by_tenant.get(str(it.get("tenant_id", ""))) if isinstance(it, dict) else None
            if lc is None or it.get("metric_name") != "Latency" or "variant" in (it.get("dimensions") or {}):
                continue
            ts = it.get("timestamp")  # the clean topic's lean points: epoch seconds; ISO text otherwise
            try:
                sec = float(ts) if isinstance(ts, int | float) else \
                    datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
            lc.telemetry_lag.append(round(at - sec, 3))

    def observe(self, topic: str, value: bytes) -> None:
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        lc = self.by_tenant.get(str(data.get("tenant_id", "")))
        if lc is None:
            return
        rel = round(self.rel(lc), 1)
        if topic == t.INSIGHTS and data.get("insight_type") != "improvement_outcome":
            comp = str(data.get("affected_component", ""))
            lc.record.insights.append((rel, comp, str(data.get("problem_type") or data.get("insight_type"))))
            if rel >= 0 and len([i for i in lc.record.insights if i[0] >= 0]) == 1:
                lc.first_insight = f"{data.get('insight_type')} on {comp}: {str(data.get('description', ''))[:70]}"
                self.say(f"{lc.case.name} +{rel:.0f}s first insight {lc.first_insight}")
        elif topic == t.OPPORTUNITIES:
            try:
                opp = ImprovementOpportunity.model_validate(data)
            except ValueError:
                return
            lc.opportunities[opp.opportunity_id] = opp
            if rel >= 0 and lc.first_opportunity is None and opp.status == "open":
                lc.first_opportunity = (rel, f"{opp.priority} {opp.problem_type} on "
                                             f"{','.join(opp.affected_components)}: {opp.title[:60]}")
                self.say(f"{lc.case.name} +{rel:.0f}s opportunity {lc.first_opportunity[1]}")
        elif topic == t.IMPROVEMENT_EVENTS:
            self._improvement(lc, data, rel)

    def _improvement(self, lc: LabCase, data: dict[str, Any], rel: float) -> None:
        iid = str(data.get("improvement_id", ""))
        status = str(data.get("status", ""))
        body = data.get("data") or {}
        imp = lc.improvements.get(iid)
        if imp is None:
            opp = body.get("opportunity") or {}
            comps = opp.get("affected_components") or ["?"]
            imp = ImprovementRecord(iid, str(comps[0]), str(opp.get("problem_type", "?")), rel, status)
            lc.improvements[iid] = imp
            lc.record.improvements.append(imp)
            if rel >= 0 and lc.record.top_component is None:  # the loop's top pick after the onset
                lc.record.top_component, lc.record.top_problem = imp.component, imp.problem_type
            self.say(f"{lc.case.name} +{rel:.0f}s improvement {iid} on {imp.component} ({imp.problem_type})")
        imp.status = status
        steps = lc.steps.setdefault(iid, {"started": rel})
        steps.setdefault(status, rel)
        if status == "validating" and isinstance(body.get("plan"), dict):
            imp.changes = [c for c in body["plan"].get("changes", []) if isinstance(c, dict)]
        if status == "awaiting_approval" and iid not in lc.approved:
            lc.approved.add(iid)
            self.say(f"{lc.case.name} +{rel:.0f}s {iid} awaits approval")
            asyncio.get_running_loop().create_task(self._approve(lc, iid))
        if status in ("deploying", "monitoring"):
            if "approved" not in steps:
                steps["approved"], steps["approved_by"] = rel, "automatic (guardrails)"
            deployment = body.get("deployment")
            deployment = deployment if isinstance(deployment, dict) else {}
            if isinstance(body.get("baseline"), dict) and body["baseline"]:
                steps["baseline"] = dict(body["baseline"])
            if deployment.get("stage"):
                steps.setdefault(f"stage_{deployment['stage']}", rel)
        if status in ("completed", "rolled_back", "failed"):
            imp.verdict_at = rel
            if status == "completed":
                self._counterfactual(lc, imp)
            steps["settles"] = self.settles(lc, imp)
            if status in VERDICTS:
                steps["verdict"] = str(body.get("verdict") or VERDICTS[status])
                steps["reason"] = str(data.get("reason", ""))[:300]
                if isinstance(body.get("degradation"), int | float):
                    steps["degradation"] = float(body["degradation"])
            plan = ", ".join(f"{c.get('parameter')} {c.get('old')}→{c.get('new')}" for c in imp.changes)
            self.say(f"{lc.case.name} +{rel:.0f}s {iid} {status} [{plan}] {str(data.get('reason', ''))[:80]}")

    @staticmethod
    def settles(lc: LabCase, imp: ImprovementRecord) -> bool:
        """Whether a verdict settles the case (the demo's end of a scenario): a rollback (the change hurt and
        is undone), or a kept change that took back at least SETTLE_SHARE of what the fault did to the
        oracle's metric (the model at the verdict with and without the change, against the pre-fault level);
        on a no-fault control any verdict. A kept change that helps too little leaves the case open: the
        operator goes on."""
        if imp.status == "rolled_back":
            return True
        o = lc.case.oracle
        if imp.status != "completed" or not o.fault:
            return imp.status == "completed"
        if o.metric is None or imp.component != o.component:
            return False
        pre = window(lc.record.series.get(o.component, []), o.metric, -PRE_WINDOW, 0.0)
        with_change, without = imp.with_change.get(o.metric), imp.without_change.get(o.metric)
        if pre is None or with_change is None or without is None:
            return False
        sign = -1.0 if o.metric == "throughput" else 1.0  # the metric's bad direction
        deviation, gain = sign * (without - pre), sign * (without - with_change)
        return deviation > 0 and gain >= SETTLE_SHARE * deviation

    def _counterfactual(self, lc: LabCase, imp: ImprovementRecord) -> None:
        """The component's expected metrics now, with the kept change and without it."""
        new: dict[str, Knob] = {}
        old: dict[str, Knob] = {}
        for c in imp.changes:
            p = str(c.get("parameter"))
            if isinstance(c.get("new"), bool | int | float):
                new[p] = c["new"]
            if isinstance(c.get("old"), bool | int | float):
                old[p] = c["old"]
        if imp.component not in lc.sim.knobs:
            return
        t_lab = self.elapsed()
        with_change = lc.sim.outcomes(t_lab, {imp.component: new})[imp.component][0]
        without = lc.sim.outcomes(t_lab, {imp.component: old})[imp.component][0]
        imp.with_change = {m: round(metric_of(with_change, m), 4) for m in ("latency", "error_rate", "throughput")}
        imp.without_change = {m: round(metric_of(without, m), 4) for m in ("latency", "error_rate", "throughput")}

    # --- the operator and the approver -----------------------------------------------------------
    async def _approve(self, lc: LabCase, iid: str) -> None:
        # Like a person reading the dashboard first: approve after BASELINE_WINDOW_SECONDS, so the baseline
        # (that long before the deploy) is the service as it is now, not a mix with the minutes before.
        await asyncio.sleep(self.settings.baseline_window_seconds)
        assert self.steering is not None
        rel = round(self.rel(lc), 1)
        who = await self.steering.approve(iid, lc.case.tenant_id,
                                          f"{lc.case.name}: every change is approved; monitoring judges it")
        steps = lc.steps.setdefault(iid, {})
        steps["approved"], steps["approved_by"] = rel, who
        self.say(f"{lc.case.name} +{rel:.0f}s {iid} approved by {who}")

    def fresh_opportunity(self, lc: LabCase, since: datetime) -> ImprovementOpportunity | None:
        """The tenant's top open opportunity with evidence newer than `since` (the loop's ranking)."""
        opps = [o for o in lc.opportunities.values() if o.status == "open" and o.last_seen >= since]
        return sorted(opps, key=sort_key)[0] if opps else None

    async def operate(self, lc: LabCase) -> None:
        """The same operator for every case (faults and controls alike): from the onset on, whenever an open
        opportunity has new evidence since the last cycle and no improvement of the tenant is under way,
        trigger a cycle for the tenant (one improvement) and let it run to its verdict; any improvement
        awaiting approval is approved (see `observe`). The case's `operator` section may leave the first
        cycle to the critical alarm, or focus the cycles on one problem type of the oracle's component."""
        c, tm, op = lc.case, self.timing, lc.case.operator
        await asyncio.sleep(max(0.0, c.onset - self.elapsed()))
        if c.fault is not None:
            self.say(f"{c.name} fault injected on {c.fault.service}: {c.fault.kind} {c.fault.label}".rstrip())
        if op.trigger == "alarm":
            self.say(f"{c.name} waiting for the critical alarm's emergency cycle (the operator steps in after "
                     f"{op.alarm_wait_seconds:.0f}s)")
        since = now()
        retry, retries = False, 0
        await asyncio.sleep(max(0.0, c.onset + tm.first_cycle_after - self.elapsed()))
        while self.rel(lc) < c.observe_seconds - tm.cycle_needs and not self._finished(lc):
            busy = any(i.status not in TERMINAL for i in lc.improvements.values())
            held = op.trigger == "alarm" and self.rel(lc) < op.alarm_wait_seconds
            if busy or held or (not retry and self.fresh_opportunity(lc, since) is None):
                await asyncio.sleep(1.0)  # one change at a time per tenant (the loop may start its own)
                continue
            since = now()
            lc.cycles += 1
            cid = f"cycle-lab-{c.tenant_id}-{lc.cycles}-{uuid.uuid4().hex[:6]}"
            lc.cycle_ids.append(cid)
            known = set(lc.improvements)
            assert self.steering is not None
            asked = self.rel(lc)  # the MCP tool returns once the cycle's first events are seen (or ~10 s)
            how = await self.steering.trigger(c.tenant_id, c.oracle.component if op.focus else None, op.focus,
                                              cycle_id=cid)
            self.say(f"{c.name} +{asked:.0f}s cycle triggered ({how})")
            started = await self._wait(lambda k=known: set(lc.improvements) - k, 20.0)  # type: ignore[misc]
            judged = False
            if started:
                new = next(iter(set(lc.improvements) - known))
                await self._wait(lambda n=new: lc.improvements[n].status in TERMINAL,  # type: ignore[misc]
                                 max(10.0, c.observe_seconds - self.rel(lc)))
                judged = lc.improvements[new].status in VERDICTS
            retry = not judged and retries < tm.retries_without_verdict
            retries += retry
            await asyncio.sleep(tm.between_cycles)
        if tm.stop_after_verdict is not None:
            await self._wait(lambda: self._finished(lc), max(0.0, c.observe_seconds - self.rel(lc)))
            if lc.settled():
                await asyncio.sleep(tm.stop_after_verdict)  # the figures the verdict leaves behind
        await asyncio.sleep(max(0.0, c.observe_seconds - self.rel(lc)) if tm.stop_after_verdict is None else 0.0)
        lc.record.end = min(lc.record.end, self.rel(lc))
        lc.done = True

    def _finished(self, lc: LabCase) -> bool:
        """With `stop_after_verdict`: a verdict settled the case."""
        return self.timing.stop_after_verdict is not None and lc.settled()

    @staticmethod
    def _check(tasks: list[asyncio.Task[Any]], dead: Callable[[], str | None] | None) -> None:
        """Raise what a task of the run died of, or LabError when a stack process stopped."""
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        why = dead() if dead is not None else None
        if why:
            raise LabError(f"a process of the stack stopped: {why}")

    async def _wait(self, ready: Callable[[], Any], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.5)
        return True

    async def run(self, progress: Callable[[Lab], None] | None = None,
                  dead: Callable[[], str | None] | None = None,
                  ready: Callable[[Lab], Awaitable[None]] | None = None,
                  done: Callable[[list[CaseRecord]], None] | None = None) -> list[CaseRecord]:
        """Set up, run every case to the end of its observation, return the records. `dead` names a stack
        process that stopped: the run ends with LabError then (scores of a dead loop mean nothing).
        `ready` is awaited once the services are set up, before the clock starts (the demo waits for the
        MCP server there); with `done`, it is called with the records when every case ended and the workload
        goes on serving until the run is cancelled (the demo's Ctrl-C)."""
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers, acks=1)
        await self.producer.start()
        self.steering = self.make_steering(self.producer)
        tasks: list[asyncio.Task[Any]] = []
        try:
            await self.setup()
            if ready is not None:
                await ready(self)
            self.t0 = asyncio.get_running_loop().time()
            self.t0_wall = now()
            tasks = [asyncio.create_task(self.workload(), name="workload"),
                     asyncio.create_task(self.follow(), name="follow")]
            ops = [asyncio.create_task(self.operate(lc), name=lc.case.name) for lc in self.cases.values()]
            tasks += ops
            last = 0.0
            records = [lc.record for lc in self.cases.values()]
            while not all(o.done() for o in ops):
                self._check(tasks, dead)
                if progress is not None and self.elapsed() - last >= 15.0:
                    last = self.elapsed()
                    progress(self)
                await asyncio.sleep(0.5)
            self._check(tasks, dead)
            if done is not None:
                done(records)
                while True:  # the workload and the follower serve on
                    self._check(tasks, dead)
                    await asyncio.sleep(0.5)
            return records
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            await self.producer.stop()
