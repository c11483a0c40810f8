"""The lab's service model (pure, noise-free): load, knobs and active faults → latency, errors, throughput."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kaizen.lab.schema import Knob, Service

DEFAULT_KNOBS: dict[str, Knob] = {
    "cache_size": 1024.0, "cache_ttl_seconds": 60.0, "pool_size": 10.0, "concurrency": 8.0,
    "timeout_ms": 5000.0, "max_retries": 2.0, "feature_flags.circuit_breaker": False,
}
TTL_SCALE_SECONDS = 20.0
MAX_HIT_RATE = 0.97
POOL_ERROR_SHARE = 0.5  # failures per unit of relative connection shortfall
MAX_UTILISATION = 0.97
FAILED_ATTEMPT_COST = 0.2  # a failed attempt costs this share of the service's own work


@dataclass(frozen=True)
class Effects:
    """What the active faults do to one service at one moment (neutral by default)."""

    working_set_factor: float = 1.0
    backend_factor: float = 1.0
    backend_extra_ms: float = 0.0
    transient_failure: float = 0.0  # per call attempt
    leaked_connections: float = 0.0
    load_factor: float = 1.0
    own_work_factor: float = 1.0
    bug_error_rate: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """Expected behaviour of one service for one second."""

    latency_ms: float  # mean
    error_rate: float  # 0..1
    throughput: float  # requests/s served
    offered: float  # requests/s arriving
    cache_hit_rate: float | None
    pool_error_rate: float
    timeout_rate: float
    transient_error_rate: float
    shed_rate: float
    bug_error_rate: float
    downstream_error_rate: float

    def percentile_ms(self, q: float) -> float:
        """Latency percentiles of an exponential tail over the mean: p50 ≈ 0.69×, p95 ≈ 3×, p99 ≈ 4.6×."""
        return self.latency_ms * -math.log(1.0 - q / 100.0)


def knob(knobs: dict[str, Knob], name: str) -> float:
    raw = knobs.get(name, DEFAULT_KNOBS[name])
    return float(raw) if not isinstance(raw, bool) else float(DEFAULT_KNOBS[name])


def flag(knobs: dict[str, Knob], name: str) -> bool:
    raw = knobs.get(name, DEFAULT_KNOBS.get(name, False))
    return bool(raw) if isinstance(raw, bool) else False


def evaluate(svc: Service, load_rps: float, knobs: dict[str, Knob], fx: Effects,
             callees: tuple[Outcome, ...] = ()) -> Outcome:
    """One service under `knobs` and `fx` at `load_rps` requests/s (its own share already applied)."""
    offered = load_rps * svc.load_share * fx.load_factor
    retries = max(0.0, knob(knobs, "max_retries"))
    # cache in front of the backend
    hit: float | None = None
    miss = 1.0
    if svc.working_set > 0:
        cache = max(1.0, knob(knobs, "cache_size"))
        ttl = max(0.0, knob(knobs, "cache_ttl_seconds"))
        ws = svc.working_set * fx.working_set_factor
        hit = MAX_HIT_RATE * min(1.0, cache / ws) * (1.0 - math.exp(-ttl / TTL_SCALE_SECONDS))
        miss = 1.0 - hit
    # transient failures are retried: an attempt fails with p, a request after retries+1 attempts
    p = fx.transient_failure
    attempts = sum(p ** i for i in range(int(retries) + 1)) if p > 0 else 1.0
    effective = offered * attempts
    concurrency = max(1.0, knob(knobs, "concurrency"))
    capacity = svc.per_worker_rps * concurrency if svc.per_worker_rps > 0 else math.inf
    served_attempts = min(effective, capacity)
    shed = (effective - served_attempts) / effective if effective > 0 else 0.0
    u = min(MAX_UTILISATION, effective / capacity) if capacity < math.inf else 0.0
    queueing = 1.0 + 0.5 * u ** 3 / (1.0 - u)
    # the backend: contention, faults, the call deadline
    pool = max(0.0, knob(knobs, "pool_size"))
    contention = 1.0
    if svc.contention_knee > 0:
        contention += svc.contention_k * max(0.0, pool * concurrency / svc.contention_knee - 1.0)
    backend = svc.backend_latency_ms * fx.backend_factor * contention + fx.backend_extra_ms
    timeout = max(1.0, knob(knobs, "timeout_ms"))
    timeout_rate = 0.0
    backend_cost = backend
    if backend > 0:
        timeout_rate = miss * math.exp(-timeout / backend)
        if flag(knobs, "feature_flags.circuit_breaker"):
            backend_cost = backend * (1.0 - math.exp(-timeout / backend))  # timed-out calls fail fast
    # the connection pool
    pool_error = 0.0
    if svc.connections_per_100rps > 0 and backend > 0:
        needed = svc.connections_per_100rps * served_attempts * miss / 100.0
        available = pool - fx.leaked_connections
        if needed > 0:
            shortfall = max(0.0, needed - max(0.0, available)) / needed
            pool_error = min(1.0, shortfall * POOL_ERROR_SHARE) * miss
    transient = p ** (int(retries) + 1) if p > 0 else 0.0
    down_latency = sum(c.latency_ms for c in callees)
    down_error = 1.0 - math.prod(1.0 - c.error_rate for c in callees) if callees else 0.0
    own = svc.base_latency_ms * fx.own_work_factor * queueing
    latency = own * (1.0 + FAILED_ATTEMPT_COST * (attempts - 1.0)) + miss * backend_cost + down_latency
    ok = (1.0 - shed) * (1.0 - svc.base_error_rate) * (1.0 - pool_error) * (1.0 - timeout_rate) \
        * (1.0 - transient) * (1.0 - fx.bug_error_rate) * (1.0 - down_error)
    return Outcome(
        latency_ms=latency, error_rate=min(1.0, max(0.0, 1.0 - ok)), throughput=offered * (1.0 - shed),
        offered=offered, cache_hit_rate=hit, pool_error_rate=pool_error, timeout_rate=timeout_rate,
        transient_error_rate=transient, shed_rate=shed, bug_error_rate=fx.bug_error_rate,
        downstream_error_rate=down_error,
    )


def mix(a: Outcome, b: Outcome | None, share: float) -> Outcome:
    """Traffic-weighted mix: `share` of the requests served like `b` (a canary)."""
    if b is None or share <= 0:
        return a
    w = min(1.0, share)

    def m(x: float, y: float) -> float:
        return x * (1.0 - w) + y * w

    hit = None if a.cache_hit_rate is None or b.cache_hit_rate is None else m(a.cache_hit_rate, b.cache_hit_rate)
    return replace(a, latency_ms=m(a.latency_ms, b.latency_ms), error_rate=m(a.error_rate, b.error_rate),
                   throughput=m(a.throughput, b.throughput), cache_hit_rate=hit,
                   pool_error_rate=m(a.pool_error_rate, b.pool_error_rate),
                   timeout_rate=m(a.timeout_rate, b.timeout_rate),
                   transient_error_rate=m(a.transient_error_rate, b.transient_error_rate),
                   shed_rate=m(a.shed_rate, b.shed_rate), bug_error_rate=m(a.bug_error_rate, b.bug_error_rate),
                   downstream_error_rate=m(a.downstream_error_rate, b.downstream_error_rate))


def metric_of(o: Outcome, metric: str) -> float:
    """latency (ms), error_rate (percent) or throughput (requests/s) of an outcome."""
    if metric == "latency":
        return o.latency_ms
    if metric == "error_rate":
        return 100.0 * o.error_rate
    if metric == "throughput":
        return o.throughput
    raise ValueError(f"unknown metric {metric!r}")
