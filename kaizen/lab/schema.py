"""The fault-case format (YAML): services, workload, fault and oracle, validated with errors naming the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streams.errors import InputError

Knob = float | bool
Metric = Literal["latency", "error_rate", "throughput"]
# The knobs the simulator understands (see docs/lab.md): name → what it does in the service model.
KNOBS: dict[str, str] = {
    "cache_size": "entries of the cache in front of the backend (hit rate grows with cache_size / working_set)",
    "cache_ttl_seconds": "how long entries live (hit rate × (1 − e^(−ttl/20)))",
    "pool_size": "pooled backend connections (too few for the traffic → 'connection pool exhausted' errors)",
    "concurrency": "workers: throughput ceiling = per_worker_rps × concurrency; pool_size × concurrency above "
                   "contention_knee slows the backend",
    "timeout_ms": "deadline of a backend call (calls slower than it fail with 'timed out')",
    "max_retries": "retries of a failed attempt (a transient failure p per attempt fails p^(retries+1))",
    "feature_flags.circuit_breaker": "fail fast while a backend call would time out (no latency of a timed-out call)",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Alarm(_Strict):
    """A CloudWatch alarm the service owns; the lab evaluates it the way CloudWatch would."""

    name: str
    metric: Literal["Latency", "ErrorRate"] = "Latency"
    threshold: float
    periods: int = Field(3, ge=1, le=60)
    critical: bool = True


class Service(_Strict):
    """One simulated service: how its latency, errors and throughput respond to load, knobs and faults."""

    name: str = Field(description="component name (the `service` dimension and log group)")
    base_latency_ms: float = Field(10.0, gt=0, description="own work per request, at low load")
    backend_latency_ms: float = Field(50.0, ge=0, description="one backend (database) call: on every cache miss, "
                                                               "or every request when working_set is 0")
    working_set: float = Field(0.0, ge=0, description="distinct hot keys; 0 = no cache in front of the backend")
    per_worker_rps: float = Field(0.0, ge=0, description="requests/s one unit of concurrency serves; 0 = no ceiling")
    contention_knee: float = Field(0.0, ge=0, description="pool_size × concurrency above which the backend "
                                                          "slows down; 0 = never")
    contention_k: float = Field(0.4, ge=0, description="backend slow-down per unit of load above the knee")
    connections_per_100rps: float = Field(0.0, ge=0, description="pooled connections 100 backend calls/s need; "
                                                                 "0 = the pool is never short")
    base_error_rate: float = Field(0.002, ge=0, lt=1, description="fraction failing with nothing wrong")
    load_share: float = Field(1.0, gt=0, description="share of the workload's requests/s reaching this service")
    calls: list[str] = Field(default_factory=list, description="services called once per request: their latency "
                                                               "adds, their errors propagate")
    users_per_hour: float = Field(1000.0, ge=0)
    noise: float = Field(0.03, ge=0, le=0.5, description="relative noise of latency, errors and traffic")
    knobs: dict[str, Knob] = Field(default_factory=dict, description="SSM parameters and their current values")
    alarms: list[Alarm] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("lower-case letters, digits and '-', at most 41 characters")
        return v

    @field_validator("knobs")
    @classmethod
    def _knobs(cls, v: dict[str, Knob]) -> dict[str, Knob]:
        for name, value in v.items():
            if name not in KNOBS:
                raise ValueError(f"unknown knob {name!r}; the simulator understands {', '.join(KNOBS)}")
            if name.startswith("feature_flags.") != isinstance(value, bool):
                raise ValueError(f"knob {name!r}: flags take true/false, the others numbers")
            if not isinstance(value, bool) and value < 0:
                raise ValueError(f"knob {name!r}: {value} is negative")
        return v


class Workload(_Strict):
    """The load shape: requests/s at the front, constant or a (compressed) daily cycle."""

    shape: Literal["constant", "daily"] = "constant"
    rps: float = Field(100.0, gt=0)
    amplitude: float = Field(0.0, ge=0, lt=1, description="daily: relative swing around rps")
    period_seconds: float = Field(240.0, gt=10, description="daily: length of one compressed day")


class _Fault(_Strict):
    service: str = Field(description="the service the fault hits")
    onset_seconds: float = Field(60.0, ge=20, description="seconds after the lab starts the workload")
    duration_seconds: float | None = Field(None, gt=0, description="unset: the fault persists")
    label: str = ""


class CachePressure(_Fault):
    kind: Literal["cache_pressure"]
    working_set_factor: float = Field(gt=1)


class BackendSlowdown(_Fault):
    kind: Literal["backend_slowdown"]
    factor: float = Field(gt=1, description="backend call latency × this (a dropped index, a slow disk)")


class DependencyLatency(_Fault):
    kind: Literal["dependency_latency"]
    extra_ms: float = Field(gt=0, description="added to every backend call (a slow downstream dependency)")


class ErrorBurst(_Fault):
    kind: Literal["error_burst"]
    failure_per_attempt: float = Field(gt=0, lt=1, description="transient failures per call attempt")
    message: str = Field("upstream answered 503 Service Unavailable", description="the ERROR log line's text")


class ConnectionLeak(_Fault):
    kind: Literal["connection_leak"]
    rate_per_second: float = Field(gt=0, description="connections leaked per second")
    max_leaked: float = Field(gt=0, description="the leak stops at this many connections")


class TrafficSurge(_Fault):
    kind: Literal["traffic_surge"]
    factor: float = Field(gt=1, description="the service's requests/s × this")
    ramp_seconds: float = Field(10.0, ge=0)


class BadDeploy(_Fault):
    kind: Literal["bad_deploy"]
    version: str = "v2"
    latency_factor: float = Field(1.0, ge=1, description="own work per request × this")
    error_rate: float = Field(0.0, ge=0, lt=1, description="added failures (a bug in the new version)")
    message: str = Field("NullPointerException in OrderMapper.toDto", description="the ERROR log line's text")


class MemoryLeak(_Fault):
    kind: Literal["memory_leak"]
    growth_per_minute: float = Field(gt=0, description="own work per request grows by this fraction per minute")


class NoopDeploy(_Fault):
    kind: Literal["noop_deploy"]
    version: str = "v2"


Fault = Annotated[CachePressure | BackendSlowdown | DependencyLatency | ErrorBurst | ConnectionLeak | TrafficSurge
                  | BadDeploy | MemoryLeak | NoopDeploy, Field(discriminator="kind")]
FAULT_KINDS = ("cache_pressure", "backend_slowdown", "dependency_latency", "error_burst", "connection_leak",
               "traffic_surge", "bad_deploy", "memory_leak", "noop_deploy")


class FixChange(_Strict):
    knob: str
    direction: Literal["up", "down", "on", "off"]


class Oracle(_Strict):
    """The right answer: no fault, or the affected component, the metric and the knob changes that fix it."""

    fault: bool = Field(description="false for a no-fault control")
    component: str | None = Field(None, description="the affected service (required with fault: true)")
    metric: Metric | None = Field(None, description="the metric the fault degrades (required with fault: true)")
    fixable: bool = Field(False, description="whether a knob change can bring the metric back")
    fix: list[FixChange] = Field(default_factory=list, description="knob changes that fix it (fixable: true)")
    margin: float = Field(0.25, gt=0, le=2, description="mitigated: within this relative margin of pre-fault")
    margin_abs: float | None = Field(None, ge=0, description="… or within this absolute margin (ms, percentage "
                                                              "points, requests/s); default per metric")

    @model_validator(mode="after")
    def _consistent(self) -> Oracle:
        if self.fault and (self.component is None or self.metric is None):
            raise ValueError("a fault needs `component` and `metric`")
        if not self.fault and (self.fixable or self.fix):
            raise ValueError("a no-fault control has nothing to fix (`fixable`/`fix` must be unset)")
        if self.fixable and not self.fix:
            raise ValueError("fixable: true needs the knob changes in `fix`")
        return self


class Operator(_Strict):
    """How the lab's operator starts cycles for the case (default: a manual cycle whenever an opportunity has
    new evidence, from 10 s after the onset on)."""

    trigger: Literal["manual", "alarm"] = Field(
        "manual", description="alarm: the first cycle is left to the loop's emergency cycle on the critical "
                              "alarm's ALARM transition; the operator steps in only after `alarm_wait_seconds`")
    alarm_wait_seconds: float = Field(90.0, ge=0, description="trigger alarm: seconds after the onset before the "
                                                              "operator triggers cycles itself")
    focus: str | None = Field(None, pattern=r"^[a-z_:]{1,60}$",
                              description="the operator's cycles focus on the oracle component's opportunities of "
                                          "this problem type (e.g. database_connection): the loop is told where "
                                          "to look, so such a case does not measure localization")


class Expect(_Strict):
    """What the case is expected to end with: the verdict of its first improvement (`kaizen demo` checks it)."""

    verdict: Literal["keep", "rollback"] = Field(description="keep: the fix is kept; rollback: the change the "
                                                             "loop makes hurts and monitoring rolls it back")


class Case(_Strict):
    """One fault case: services of one tenant, their workload, the fault and the oracle."""

    name: str
    description: str = ""
    tenant: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.]{0,60}$",
                               description="tenant id (default: `lab_` + name with '_' for '-')")
    seed: int = 0
    workload: Workload = Workload()
    services: list[Service] = Field(min_length=1)
    fault: Fault | None = None
    oracle: Oracle
    observe_seconds: float = Field(240.0, ge=60, description="seconds after onset the case is watched")
    onset_seconds: float = Field(60.0, ge=20, description="no-fault controls: when the 'fault-free onset' is")
    operator: Operator = Operator()
    expect: Expect | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("lower-case letters, digits and '-', at most 41 characters")
        return v

    @model_validator(mode="after")
    def _references(self) -> Case:
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ValueError("services: names must be unique")
        for s in self.services:
            for callee in s.calls:
                if callee not in names or callee == s.name:
                    raise ValueError(f"services.{s.name}.calls: {callee!r} is not another service of the case")
        if _cyclic({s.name: s.calls for s in self.services}):
            raise ValueError("services: the `calls` graph has a cycle")
        if self.fault is not None and self.fault.service not in names:
            raise ValueError(f"fault.service: {self.fault.service!r} is not a service of the case")
        if self.oracle.component is not None and self.oracle.component not in names:
            raise ValueError(f"oracle.component: {self.oracle.component!r} is not a service of the case")
        if self.oracle.fault and (self.fault is None or self.fault.kind == "noop_deploy"):
            raise ValueError("oracle.fault: true needs a fault that changes something")
        target = next((s for s in self.services if s.name == self.oracle.component), None)
        for change in self.oracle.fix:
            if target is not None and change.knob not in target.knobs:
                raise ValueError(f"oracle.fix: knob {change.knob!r} is not a knob of {target.name}")
        self._operator_and_expect(target)
        return self

    def _operator_and_expect(self, target: Service | None) -> None:
        op = self.operator
        if op.focus is not None and target is None:
            raise ValueError("operator.focus: needs the oracle's component (a fault case)")
        if op.trigger == "alarm":
            if target is None or not any(a.critical for a in target.alarms[:1]):
                raise ValueError("operator.trigger: alarm needs a critical alarm as the first alarm of the "
                                 "oracle's component")
        if self.expect is not None:
            if self.expect.verdict == "keep" and not self.oracle.fixable:
                raise ValueError("expect.verdict: keep needs a fault a knob fixes (oracle.fixable: true)")
            if self.expect.verdict == "rollback" and not self.oracle.fault:
                raise ValueError("expect.verdict: rollback needs a fault (oracle.fault: true)")

    @property
    def tenant_id(self) -> str:
        return self.tenant or "lab_" + self.name.replace("-", "_")

    @property
    def onset(self) -> float:
        return self.fault.onset_seconds if self.fault is not None else self.onset_seconds

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)


def _cyclic(graph: dict[str, list[str]]) -> bool:
    state: dict[str, int] = {}

    def visit(n: str) -> bool:
        if state.get(n) == 1:
            return True
        if state.get(n) == 2:
            return False
        state[n] = 1
        if any(visit(m) for m in graph.get(n, [])):
            return True
        state[n] = 2
        return False

    return any(visit(n) for n in graph)


class CaseError(InputError):
    """A case file that cannot be used; the message names the file and the field."""


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FAULT_KINDS:  # the discriminated union's branch name adds nothing for the reader
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(case)"


def parse_case(data: Any, source: str = "<case>") -> Case:
    """A Case from parsed YAML/JSON; CaseError naming each bad field otherwise."""
    if not isinstance(data, dict):
        raise CaseError(f"{source}: a case is a mapping (name, services, fault, oracle …), got {type(data).__name__}")
    try:
        return Case.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise CaseError("invalid case\n  " + "\n  ".join(lines)) from None


def load_case(path: Path) -> Case:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CaseError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise CaseError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_case(data, str(path))


def library_dir() -> Path:
    return Path(__file__).parent / "cases"


def demo_dir() -> Path:
    """The demo's scenarios (`kaizen demo`): cases of their own, not part of the default library."""
    return library_dir() / "demo"


def load_cases(paths: list[Path]) -> list[Case]:
    """Case files (a directory: every *.yaml in it); duplicate names or tenants are an error."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p])
    cases = [load_case(f) for f in files]
    seen: dict[str, str] = {}
    for c in cases:
        for key in (f"name {c.name}", f"tenant {c.tenant_id}"):
            if key in seen:
                raise CaseError(f"two cases share the {key}")
            seen[key] = c.name
    if not cases:
        raise CaseError("no case files given (or the directories hold no *.yaml)")
    return cases


def json_schema() -> dict[str, Any]:
    return Case.model_json_schema()
