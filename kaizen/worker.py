"""Composition root of a worker: registers the agents on the one app and runs a Faust worker."""

from __future__ import annotations

import gc
import importlib
import os
import uuid
from typing import Any

import structlog

from streams.runtime import runtime

log = structlog.get_logger(__name__)

# Agent modules register themselves on the app at import; order does not matter.
AGENT_MODULES: tuple[str, ...] = (
    "agents.ingest.agent",
    "agents.scoring.agent",
    "agents.scoring.fused",
    "agents.patterns.agent",
    "agents.opportunities.agent",
    "agents.events.agent",
    "agents.improvement.cycle",
    "agents.improvement.agent",
    "agents.healing.agent",
    "agents.healing.executions",
    "agents.status",
)


def load_agents(extra: tuple[str, ...] = ()) -> list[str]:
    loaded = []
    for name in AGENT_MODULES + extra:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A stage whose module is not present in this build is reported, not hidden.
            if exc.name and name.startswith(exc.name):
                log.warning("agent module missing", module=name)
                continue
            raise
        loaded.append(name)
    return loaded


# Cyclic GC generation thresholds of a worker (CPython's default: 700, 10, 10). Every telemetry message
# allocates a thousand or so short-lived dicts that refcounting frees; at the default a gen-0 pass ran
# every 700 of them and walked the live ones (tens of thousands of series models) again and again:
# ~25 % of a busy worker (py-spy: the time landed on orjson.loads). Collections stay on for the rare
# cycles (tasks, exceptions), just far less often. Measured in benchmarks/pipeline_throughput.py.
GC_THRESHOLDS = (50_000, 20, 50)


def tune_gc() -> None:
    """Freeze what start-up built (imports, app, agents: never garbage) out of the collector's walks
    and collect young objects far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(loglevel: str = "info") -> None:
    """Run one Faust worker in the foreground until SIGINT/SIGTERM."""
    import asyncio

    from faust import Worker

    from kaizen.supervisor import create_topics
    from streams.app import app

    # Every declared topic exists before any agent or view subscribes (idempotent).
    asyncio.run(create_topics(runtime.bootstrap, app.conf.topic_partitions))
    runtime.process_id = f"worker-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    modules = load_agents()
    log.info("worker starting", agents=modules, broker=str(app.conf.broker), process=runtime.process_id)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        for store in runtime.stores:
            parts = {tp.partition for tp in revoked if tp.topic == store.source_topic}
            if parts:
                store.forget(parts)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _report_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        log.info("partitions assigned", count=len(assigned))

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG (at loglevel warning and above), so every
    # debug call of Faust and aiokafka — several per message sent — built a LogRecord to throw away
    # (~4 % of a busy worker). The worker logs through structlog; no spinner.
    worker.spinner = None
    tune_gc()

    try:
        worker.execute_from_commandline()
    finally:
        log.info("worker stopped", process=runtime.process_id)
