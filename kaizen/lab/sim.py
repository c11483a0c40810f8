"""A case's services over time: the fault's effects at each second, noisy ticks with log lines, counterfactuals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime

from kaizen.demo.workload.service import LogLine, Tick
from kaizen.lab.model import DEFAULT_KNOBS, Effects, Outcome, evaluate, knob, mix
from kaizen.lab.schema import Case, Knob, Service

MAX_LOG_ERRORS_PER_TICK = 4


def effects_at(case: Case, service: str, t: float) -> Effects:
    """What the case's fault does to `service` at `t` seconds after the lab started."""
    f = case.fault
    if f is None or f.service != service or t < f.onset_seconds:
        return Effects()
    age = t - f.onset_seconds
    if f.duration_seconds is not None and age >= f.duration_seconds:
        return Effects()
    if f.kind == "cache_pressure":
        return Effects(working_set_factor=f.working_set_factor)
    if f.kind == "backend_slowdown":
        return Effects(backend_factor=f.factor)
    if f.kind == "dependency_latency":
        return Effects(backend_extra_ms=f.extra_ms)
    if f.kind == "error_burst":
        return Effects(transient_failure=f.failure_per_attempt)
    if f.kind == "connection_leak":
        return Effects(leaked_connections=min(f.max_leaked, f.rate_per_second * age))
    if f.kind == "traffic_surge":
        ramp = 1.0 if f.ramp_seconds <= 0 else min(1.0, age / f.ramp_seconds)
        return Effects(load_factor=1.0 + (f.factor - 1.0) * ramp)
    if f.kind == "bad_deploy":
        return Effects(own_work_factor=f.latency_factor, bug_error_rate=f.error_rate)
    if f.kind == "memory_leak":
        return Effects(own_work_factor=1.0 + f.growth_per_minute * age / 60.0)
    return Effects()  # noop_deploy


def load_at(case: Case, t: float) -> float:
    w = case.workload
    if w.shape == "daily":
        return w.rps * (1.0 + w.amplitude * math.sin(2.0 * math.pi * t / w.period_seconds))
    return w.rps


def _order(case: Case) -> list[Service]:
    """Callees before their callers."""
    done: list[Service] = []
    names: set[str] = set()
    pending = list(case.services)
    while pending:
        for s in list(pending):
            if all(c in names for c in s.calls):
                done.append(s)
                names.add(s.name)
                pending.remove(s)
    return done


@dataclass
class Knobs:
    """A service's knob values as read from SSM: full rollout and canary overrides."""

    full: dict[str, Knob]
    canary: dict[str, Knob] = field(default_factory=dict)


class CaseSim:
    """Every service of one case; knobs come from SSM through `configure` (the reporter calls it)."""

    def __init__(self, case: Case, canary_fraction: float = 0.1) -> None:
        self.case = case
        self.rng = random.Random(case.seed)
        self.canary_fraction = canary_fraction
        self.knobs = {s.name: Knobs({**s.knobs}) for s in case.services}
        self.order = _order(case)
        self.deployed: set[str] = set()  # services whose deploy line was logged

    def configure(self, service: str, full: dict[str, Knob], canary: dict[str, Knob]) -> None:
        known = self.case.service(service).knobs
        self.knobs[service] = Knobs({k: v for k, v in full.items() if k in known},
                                    {k: v for k, v in canary.items() if k in known})

    def outcomes(self, t: float, overrides: dict[str, dict[str, Knob]] | None = None
                 ) -> dict[str, tuple[Outcome, Outcome | None]]:
        """Per service: the traffic on the full knobs, and the canary share's (None without a canary).

        `overrides` replaces knob values (a counterfactual: the same moment without a change)."""
        out: dict[str, tuple[Outcome, Outcome | None]] = {}
        whole: dict[str, Outcome] = {}
        load = load_at(self.case, t)
        for s in self.order:
            fx = effects_at(self.case, s.name, t)
            callees = tuple(whole[c] for c in s.calls)
            k = self.knobs[s.name]
            full = {**DEFAULT_KNOBS, **s.knobs, **k.full, **(overrides or {}).get(s.name, {})}
            main = evaluate(s, load, full, fx, callees)
            canary = evaluate(s, load, {**full, **k.canary}, fx, callees) if k.canary and not overrides else None
            out[s.name] = (main, canary)
            whole[s.name] = mix(main, canary, self.canary_fraction)
        return out

    def tick(self, now: datetime, t: float, summary: bool = True) -> dict[str, tuple[Tick, Outcome]]:
        """One second of every service at `t` (seconds since the lab started): its tick and expected outcome.
        `summary`: include the INFO summary line (the lab writes it every few seconds, to spare the endpoint)."""
        res: dict[str, tuple[Tick, Outcome]] = {}
        for name, (main, canary) in self.outcomes(t).items():
            res[name] = (self._tick(self.case.service(name), now, t, main, canary, summary), main)
        return res

    def _noisy(self, value: float, noise: float) -> float:
        return max(0.0, value * (1.0 + self.rng.gauss(0.0, noise)))

    def _tick(self, s: Service, now: datetime, t: float, main: Outcome, canary: Outcome | None,
              summary: bool) -> Tick:
        whole = mix(main, canary, self.canary_fraction)
        requests = max(1, round(self._noisy(whole.throughput, s.noise / 2)))
        latency = max(0.1, self._noisy(main.latency_ms, s.noise))
        error = min(1.0, self._noisy(main.error_rate, s.noise))
        c_latency = c_error = None
        if canary is not None:
            c_latency = max(0.1, self._noisy(canary.latency_ms, s.noise))
            c_error = 100.0 * min(1.0, self._noisy(canary.error_rate, s.noise))
        whole_error = min(1.0, self._noisy(whole.error_rate, s.noise))
        errors = round(requests * whole_error) if requests * whole_error >= 1 \
            else int(self.rng.random() < requests * whole_error)
        return Tick(
            timestamp=now, requests=requests, latency_ms=latency,
            latency_max_ms=max(latency, main.percentile_ms(99) * (1.0 + self.rng.gauss(0.0, s.noise))),
            error_rate_pct=100.0 * error,
            cache_hit_rate_pct=None if whole.cache_hit_rate is None else 100.0 * whole.cache_hit_rate,
            active_users=s.users_per_hour * requests / max(1.0, whole.offered),
            canary_share=self.canary_fraction if canary is not None else 0.0,
            canary_latency_ms=c_latency, canary_error_rate_pct=c_error,
            logs=self._logs(s, now, t, requests, errors, latency, whole, summary),
        )

    def _logs(self, s: Service, now: datetime, t: float, requests: int, errors: int, latency: float,
              o: Outcome, summary: bool) -> list[LogLine]:
        comp, rng, k = s.name, self.rng, self.knobs[s.name].full
        hit = "" if o.cache_hit_rate is None else f" cache hit {100 * o.cache_hit_rate:.0f}%"
        lines = [LogLine(now, "INFO", f"INFO {comp} served {requests} requests avg {latency:.1f} ms{hit}")] \
            if summary else []
        f = self.case.fault
        if f is not None and f.service == comp and f.kind in ("bad_deploy", "noop_deploy") \
                and t >= f.onset_seconds and comp not in self.deployed:
            self.deployed.add(comp)
            lines.append(LogLine(now, "INFO", f"INFO {comp} deployed version {f.version}"))
        causes: list[tuple[float, str]] = [
            (o.pool_error_rate, f"ERROR {comp} database connection failed: connection pool exhausted "
                                f"(pool_size={int(knob({**s.knobs, **k}, 'pool_size'))}, waiting={{n}})"),
            (o.timeout_rate, f"ERROR {comp} backend request timed out after "
                             f"{int(knob({**s.knobs, **k}, 'timeout_ms'))} ms"),
            (o.shed_rate, f"ERROR {comp} request rejected: all {int(knob({**s.knobs, **k}, 'concurrency'))} "
                          f"workers busy, queue full"),
            (o.bug_error_rate, f"ERROR {comp} {getattr(f, 'message', '')}"),
            (o.transient_error_rate, f"ERROR {comp} {getattr(f, 'message', '')} after retries"),
            # a caller reports a failing callee as a warning: the callee logs (and owns) the error
            (o.downstream_error_rate, f"WARN {comp} call to {', '.join(s.calls)} failed; answered 502"),
            (s.base_error_rate, f"WARN {comp} upstream answered {{code}}; client will retry"),
        ]
        total = sum(w for w, _ in causes)
        for _ in range(min(errors, MAX_LOG_ERRORS_PER_TICK)):
            if total <= 0:
                break
            roll, acc = rng.random() * total, 0.0
            for w, text in causes:
                acc += w
                if roll < acc:
                    msg = text.replace("{n}", str(rng.randint(3, 40))).replace("{code}", str(rng.choice((502, 503))))
                    lines.append(LogLine(now, msg.split(" ", 1)[0], msg))
                    break
        return lines
