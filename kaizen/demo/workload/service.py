"""The simulated service: tunable parameters and injected faults → per-second metrics and log lines (deterministic)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime

Value = float | bool

DEFAULT_PARAMETERS: dict[str, Value] = {
    "cache_size": 1024.0,
    "cache_ttl_seconds": 60.0,
    "timeout_ms": 5000.0,
    "pool_size": 10.0,
    "max_retries": 2.0,
    "concurrency": 8.0,
    "feature_flags.circuit_breaker": False,
}
TTL_SCALE_SECONDS = 20.0  # entries expire: hit rate × (1 − e^(−ttl/scale)); ttl 60 s → 0.95, 120 s → 0.9975
MAX_HIT_RATE = 0.97
POOL_ERROR_SHARE = 0.2  # share of requests failing per unit of connection shortfall
RETRY_RELIEF = 0.6  # each retry above the default lets this fraction of failed attempts still fail
MAX_LOG_ERRORS_PER_TICK = 4


@dataclass(frozen=True)
class ServiceProfile:
    """What a service is like: traffic, working set, cache and database latencies and its limits."""

    tenant_id: str
    component: str
    base_rps: float = 200.0
    working_set: float = 800.0  # distinct hot keys
    hit_ms: float = 8.0  # latency of a request served from cache
    db_ms: float = 60.0  # latency of a request that goes to the database
    db_every_request: bool = False  # writes: every request needs a pooled connection
    contention_knee: float = 400.0  # pool_size × concurrency above which the database contends
    contention_k: float = 0.4  # latency growth per unit of load above the knee
    connections_needed: float = 6.0  # pooled connections the traffic needs
    base_error: float = 0.002  # fraction of requests failing with nothing wrong
    users_per_hour: float = 1000.0
    noise: float = 0.03  # relative noise of latency and traffic


@dataclass(frozen=True)
class Faults:
    """Injected faults: working-set growth, slow database, leaked connections, a slow dependency."""

    working_set_factor: float = 1.0
    db_slowdown: float = 1.0
    leaked_connections: float = 0.0
    dependency_ms: float = 0.0

    def active(self) -> bool:
        return self != Faults()


@dataclass(frozen=True)
class Outcome:
    """Expected (noise-free) behaviour of the service under one parameter set."""

    latency_ms: float
    error_rate: float  # fraction 0..1
    cache_hit_rate: float  # fraction 0..1
    db_error_rate: float
    timeout_rate: float
    contention: float


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    message: str


@dataclass(frozen=True)
class Tick:
    """One second of the service as CloudWatch sees it."""

    timestamp: datetime
    requests: int
    latency_ms: float  # average
    latency_max_ms: float
    error_rate_pct: float  # Percent (0..100)
    cache_hit_rate_pct: float | None  # Percent (0..100); None: the service has no cache
    active_users: float
    canary_share: float
    canary_latency_ms: float | None = None  # the canary share of traffic, measured on its own
    canary_error_rate_pct: float | None = None
    logs: list[LogLine] = field(default_factory=list)


def _num(params: dict[str, Value], name: str) -> float:
    raw = params.get(name, DEFAULT_PARAMETERS[name])
    return float(raw) if not isinstance(raw, bool) else float(DEFAULT_PARAMETERS[name])


def evaluate(profile: ServiceProfile, params: dict[str, Value], faults: Faults) -> Outcome:
    """The service's behaviour under `params` and `faults` (pure, noise-free)."""
    cache = max(1.0, _num(params, "cache_size"))
    ttl = max(0.0, _num(params, "cache_ttl_seconds"))
    pool = _num(params, "pool_size")
    concurrency = _num(params, "concurrency")
    retries = _num(params, "max_retries")
    timeout = max(1.0, _num(params, "timeout_ms"))
    working_set = profile.working_set * faults.working_set_factor
    hit = MAX_HIT_RATE * min(1.0, cache / working_set) * (1.0 - math.exp(-ttl / TTL_SCALE_SECONDS))
    contention = 1.0 + profile.contention_k * max(0.0, pool * concurrency / profile.contention_knee - 1.0)
    db = profile.db_ms * faults.db_slowdown * contention + faults.dependency_ms
    latency = profile.hit_ms + (1.0 - hit) * db
    # A database call exceeds the deadline with probability e^(−timeout/db) (exponential service times).
    timeout_rate = (1.0 - hit) * math.exp(-timeout / db)
    shortfall = max(0.0, profile.connections_needed - (pool - faults.leaked_connections)) / profile.connections_needed
    db_share = 1.0 if profile.db_every_request else 1.0 - hit
    retry_factor = RETRY_RELIEF ** max(0.0, retries - DEFAULT_PARAMETERS["max_retries"])  # type: ignore[operator]
    db_error = min(1.0, shortfall * POOL_ERROR_SHARE * db_share * retry_factor)
    error = min(1.0, profile.base_error + db_error + timeout_rate * retry_factor)
    return Outcome(latency, error, hit, db_error, timeout_rate, contention)


def blend(main: Outcome, canary: Outcome | None, share: float) -> Outcome:
    """Traffic-weighted mix: `share` of requests served with the canary parameters."""
    if canary is None or share <= 0.0:
        return main
    w = min(1.0, share)

    def mix(a: float, b: float) -> float:
        return a * (1.0 - w) + b * w

    return Outcome(mix(main.latency_ms, canary.latency_ms), mix(main.error_rate, canary.error_rate),
                   mix(main.cache_hit_rate, canary.cache_hit_rate), mix(main.db_error_rate, canary.db_error_rate),
                   mix(main.timeout_rate, canary.timeout_rate), mix(main.contention, canary.contention))


class SimulatedService:
    """One service instance: parameters (full + canary), faults, and a seeded random stream for noise."""

    def __init__(self, profile: ServiceProfile, seed: int = 0, canary_fraction: float = 0.1) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.canary_fraction = canary_fraction
        self.parameters: dict[str, Value] = dict(DEFAULT_PARAMETERS)
        self.canary: dict[str, Value] = {}
        self.faults = Faults()
        self.ticks = 0

    def inject(self, faults: Faults) -> None:
        self.faults = faults

    def clear_faults(self) -> None:
        self.faults = Faults()

    def configure(self, parameters: dict[str, Value], canary: dict[str, Value]) -> None:
        """The parameters read from the config store: full values and canary overrides."""
        self.parameters = {**DEFAULT_PARAMETERS, **parameters}
        self.canary = dict(canary)

    def outcomes(self) -> tuple[Outcome, Outcome | None]:
        """Expected behaviour of the traffic on the full parameters, and of the canary share (if any)."""
        main = evaluate(self.profile, self.parameters, self.faults)
        if not self.canary:
            return main, None
        return main, evaluate(self.profile, {**self.parameters, **self.canary}, self.faults)

    def expected(self) -> Outcome:
        """The whole service: full and canary traffic mixed by CANARY_FRACTION."""
        main, canary = self.outcomes()
        return blend(main, canary, self.canary_fraction)

    def tick(self, now: datetime) -> Tick:
        """One second of traffic at `now`: noisy metrics around the expected behaviour, and its log lines.

        Latency and error rate are those of the traffic on the full parameters; while a canary runs, the
        canary share is measured separately (as a deployment variant); throughput is the whole service's."""
        p, rng = self.profile, self.rng
        self.ticks += 1
        main, canary = self.outcomes()
        whole = blend(main, canary, self.canary_fraction)
        wave = 1.0 + 0.02 * math.sin(self.ticks / 30.0)
        requests = max(1, round(p.base_rps * wave * (1.0 + rng.gauss(0.0, p.noise / 2))))
        latency = max(0.1, main.latency_ms * (1.0 + rng.gauss(0.0, p.noise)))
        # Smooth relative noise (not integer rounding): a quiet service's error rate stays quiet.
        error_rate = min(1.0, main.error_rate * (1.0 + rng.gauss(0.0, p.noise)))
        c_latency = c_error = None
        if canary is not None:
            c_latency = max(0.1, canary.latency_ms * (1.0 + rng.gauss(0.0, p.noise)))
            c_error = 100.0 * min(1.0, canary.error_rate * (1.0 + rng.gauss(0.0, p.noise)))
        whole_error = min(1.0, whole.error_rate * (1.0 + rng.gauss(0.0, p.noise)))
        errors = round(requests * whole_error) if whole_error >= 0.01 else int(rng.random() < requests * whole_error)
        logs = self._logs(now, requests, errors, latency, whole)
        return Tick(
            timestamp=now, requests=requests, latency_ms=latency,
            latency_max_ms=latency * (2.5 + rng.random()),
            error_rate_pct=100.0 * error_rate, cache_hit_rate_pct=100.0 * whole.cache_hit_rate,
            active_users=p.users_per_hour * wave, canary_share=self.canary_fraction if canary else 0.0,
            canary_latency_ms=c_latency, canary_error_rate_pct=c_error, logs=logs,
        )

    def _logs(self, now: datetime, requests: int, errors: int, latency: float, out: Outcome) -> list[LogLine]:
        rng, comp = self.rng, self.profile.component
        lines = [LogLine(now, "INFO", f"INFO {comp} served {requests} requests avg {latency:.1f} ms "
                                      f"cache hit {100 * out.cache_hit_rate:.0f}%")]
        failing = min(errors, MAX_LOG_ERRORS_PER_TICK)
        pool = int(_num(self.parameters, "pool_size"))
        for _ in range(failing):
            db_share = out.db_error_rate / max(out.error_rate, 1e-9)
            roll = rng.random()
            if roll < db_share:
                waiting = rng.randint(3, 40)
                lines.append(LogLine(now, "ERROR", f"ERROR {comp} database connection failed: connection pool "
                                                   f"exhausted (pool_size={pool}, waiting={waiting})"))
            elif roll < db_share + out.timeout_rate / max(out.error_rate, 1e-9):
                ms = int(_num(self.parameters, "timeout_ms"))
                lines.append(LogLine(now, "ERROR", f"ERROR {comp} upstream request timed out after {ms} ms"))
            else:  # the background failures of a healthy service: transient, retried by clients
                code = rng.choice((502, 503))
                lines.append(LogLine(now, "WARN", f"WARN {comp} upstream answered {code}; client will retry"))
        return lines

