"""Shared benchmark helpers: an embedded broker, fast producing, worker processes, timing and figures."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.scoring.logic.hops import owner_partition
from kaizen.embedded import MOTO_CREDENTIALS, ManagedProcess, _die_with_parent, start_moto, start_tansu
from streams.records import metric_series_key

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = REPO_ROOT / ".kaizen" / "bench-logs"
RUN_DIR = REPO_ROOT / ".kaizen" / "bench-run"
BASE_TS = 1_700_000_000
METRIC_PARTITIONS = 4  # the raw metric topic's partitions in the throughput benchmarks


@dataclass
class Stack:
    """The broker (and AWS endpoint) one benchmark run talks to."""

    bootstrap: str
    aws_endpoint: str
    processes: list[ManagedProcess]

    def env(self, app_id: str, partitions: int = 1, **extra: str) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", **MOTO_CREDENTIALS,
                "KAIZEN_APP_ID": app_id, "KAFKA_TOPIC_PARTITIONS": str(partitions),
                "KAIZEN_DATA_DIR": str(REPO_ROOT / ".kaizen" / "bench-data" / app_id), **extra}


@contextmanager
def embedded_stack(moto: bool = True) -> Iterator[Stack]:
    """A fresh Tansu broker (+ moto) on free ports for one benchmark, stopped by pid afterwards."""
    procs: list[ManagedProcess] = []
    try:
        procs.append(start_tansu(0, LOG_DIR))
        endpoint = ""
        if moto:
            procs.append(start_moto(0, LOG_DIR))
            endpoint = f"http://127.0.0.1:{procs[1].port}"
        yield Stack(f"127.0.0.1:{procs[0].port}", endpoint, procs)
    finally:
        for p in reversed(procs):
            p.stop()


def new_app_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def start_process(args: list[str], env: dict[str, str], name: str) -> ManagedProcess:
    """`python ARGS` with env added, output to .kaizen/bench-logs/NAME.log, run in .kaizen/bench-run
    (Faust writes an <app id>-data directory into its working directory)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / f"{name}.log"
    out = open(path, "wb")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, *args], env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent, cwd=RUN_DIR)
    return ManagedProcess(name, proc, 0, path)


def start_worker(env: dict[str, str], name: str) -> ManagedProcess:
    return start_process(["-m", "kaizen.cli", "worker", "--loglevel", "warning"], env, name)


def metric_points(n: int, series: int, start: int = 0, tenant: str = "bench", metric: str = "Latency",
                  base: float = 100.0) -> list[dict[str, Any]]:
    """n points spread round-robin over `series` series; point i of a series is one minute after i-1."""
    out = []
    for i in range(start, start + n):
        s = i % series
        step = i // series
        out.append({"metric_name": metric, "value": base + (i * 7919 % 13) * 0.5, "unit": "Milliseconds",
                    "timestamp": BASE_TS + step * 60, "tenant_id": tenant, "namespace": "Bench/Pipeline",
                    "dimensions": {"service": f"svc-{s}"}})
    return out


def envelopes(points: list[dict[str, Any]], per_message: int) -> list[bytes]:
    return [orjson.dumps({"records": points[i:i + per_message]}) for i in range(0, len(points), per_message)]


async def produce_fast(bootstrap: str, topic: str, values: Iterable[bytes], partition: int | None = None,
                       key: bytes | None = None) -> int:
    """Send many values without awaiting each delivery (bounded in-flight), then flush."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_request_size=16 * 1024 * 1024)
    await p.start()
    n = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for v in values:
            pending.append(await p.send(topic, v, key=key, partition=partition))
            n += 1
            if len(pending) >= 200:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await p.stop()
    return n


class CommitWatcher:
    """Reads a consumer group's committed offsets (OffsetFetch by partition; Tansu drops the
    all-topics form the admin client sends) without joining the group."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self._c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)

    async def __aenter__(self) -> CommitWatcher:
        await self._c.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._c.stop()

    async def committed(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        out = {}
        for p in partitions:
            off = await self._c.committed(TopicPartition(topic, p))
            out[p] = off if off is not None and off >= 0 else 0
        return out


async def count_messages(bootstrap: str, topic: str, partitions: int, empty_polls: int = 2) -> dict[int, int]:
    """Messages per partition, counted by reading until polls come back empty (Tansu's end offsets are wrong)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        counts = {p: 0 for p in range(partitions)}
        empty = 0
        while empty < empty_polls:
            batch = await c.getmany(timeout_ms=300, max_records=10000)
            if not batch:
                empty += 1
                continue
            empty = 0
            for tp, msgs in batch.items():
                if msgs:
                    counts[tp.partition] = msgs[-1].offset + 1
    finally:
        await c.stop()
    return counts


async def wait_committed(bootstrap: str, group: str, topic: str, want: dict[int, int], timeout: float,
                         poll: float = 0.05) -> float | None:
    """Wait until the group committed at least `want` on every partition; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    parts = [p for p, n in want.items() if n > 0]
    async with CommitWatcher(bootstrap, group) as w:
        while time.monotonic() < deadline:
            got = await w.committed(topic, parts)
            if all(got[p] >= want[p] for p in parts):
                return time.monotonic()
            await asyncio.sleep(poll)
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    """p50 / p99 / max / mean of durations given in seconds, in milliseconds."""
    if not values_s:
        return {"n": 0}
    return {"n": len(values_s), "p50_ms": round(percentile(values_s, 50) * 1000, 2),
            "p99_ms": round(percentile(values_s, 99) * 1000, 2), "max_ms": round(max(values_s) * 1000, 2),
            "mean_ms": round(statistics.fmean(values_s) * 1000, 2)}


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_1m_at_start": round(load[0], 2)}


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default) in MiB, from /proc."""
    path = f"/proc/{pid or os.getpid()}/status"
    with open(path) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time a process has used, in seconds, from /proc (steadier than wall time
    on a shared machine: what the process itself spent)."""
    with open(f"/proc/{pid or os.getpid()}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def keyed_envelopes(points: list[dict[str, Any]], per_message: int, keyed: bool = True,
                    partitions: int = METRIC_PARTITIONS) -> list[list[bytes]]:
    """Envelopes per raw partition. Keyed (as the connectors write): each envelope holds points of series
    the partition owns (agents/scoring/logic/hops.py), so they are scored in one hop. Not keyed (as a
    producer keying by tenant): envelopes round-robin, most points forwarded once to their owner."""
    if not keyed:
        msgs = envelopes(points, per_message)
        return [msgs[p::partitions] for p in range(partitions)]
    groups: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    for pt in points:
        series = metric_series_key(pt["tenant_id"], pt.get("namespace", ""), pt["metric_name"],
                                   pt.get("statistic", "Average"), pt.get("dimensions") or {})
        groups[owner_partition(series, partitions)].append(pt)
    return [envelopes(g, per_message) for g in groups]


def warm_load() -> list[list[bytes]]:
    """One small envelope per partition (64 series each on average) before the clock starts."""
    return keyed_envelopes(metric_points(METRIC_PARTITIONS * 64, 64 * METRIC_PARTITIONS, tenant="warmup"), 64)
