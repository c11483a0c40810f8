"""Worker heartbeats on the status topic (for get_system_status), and the connectors on the leader."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.errors import KafkaError

from agents.events import agent as events
from agents.healing.executions import record_poll
from agents.improvement import agent as improvements
from agents.improvement import cycle
from agents.ingest import agent as dedup
from agents.opportunities import agent as opportunities
from agents.patterns import agent as patterns
from agents.scoring import agent as scoring
from streams import app as A
from streams.epoch import BrokerEpoch, safe_check
from streams.records import StatusReport
from streams.runtime import runtime, survives_broker_outage

log = structlog.get_logger(__name__)
_connector: dict[str, Any] = {}
_epoch: dict[str, BrokerEpoch] = {}


def worker_detail() -> dict[str, Any]:
    processed = dict(dedup.STATS["processed"])
    try:
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in A.app.consumer.assignment())
    except (AttributeError, RuntimeError):
        assigned = []
    detail: dict[str, Any] = {
        "telemetry_events_processed": sum(processed.values()),
        "processed_by_kind": processed,
        "duplicates_dropped": dict(dedup.STATS["duplicates"]),
        "deadletters": dict(dedup.STATS["deadletters"]),
        "points_scored": scoring.STATS.get("points", 0),
        "series_cap_points": scoring.STATS.get("series_cap_points", 0),
        "series_admitted": sum(len(pm.admission.admitted) for st in scoring._STATES for pm in st.partitions.values()),
        "checkpoints_too_large": scoring.STATS.get("checkpoints_too_large", 0),
        "broker_resets": list(_epoch["e"].resets) if "e" in _epoch else [],
        "insights_generated": scoring.STATS.get("insights", 0) + patterns.STATS.get("insights", 0)
        + events.STATS.get("alarms", 0),
        "log_lines": patterns.STATS.get("lines", 0),
        "pattern_cap_lines": patterns.STATS.get("pattern_cap_lines", 0),
        "patterns_live": sum(len(pp.counter.entries) for pp in patterns._parts.values()),
        "opportunity_updates": opportunities.STATS.get("updates", 0),
        "improvement_events": dict(improvements.STATS),
        "cycles_running": len(cycle._cycles),
        "assigned_partitions": len(assigned),
        "leader": bool(getattr(A.app, "is_leader", lambda: False)()),
    }
    runner = _connector.get("runner")
    if runner is not None:
        from connectors.cloudwatch.status import connector_status

        cst = connector_status(runner, runtime.process_id).detail
        detail.update(breakers=cst["breakers"], cloudwatch_api_calls=cst["cloudwatch_api_calls"],
                      circuit_breaker_opens=cst["circuit_breaker_opens"], connectors=cst)
    return detail


@A.app.timer(interval=5.0)
@survives_broker_outage
async def heartbeat() -> None:
    await send_heartbeat()


async def send_heartbeat() -> None:
    pid = runtime.process_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    report = StatusReport(process_id=pid, role="worker", timestamp=datetime.now(UTC), healthy=True,
                          detail=worker_detail())
    await A.status_topic.send(key=pid.encode(), value=report.to_bytes())


@A.app.timer(interval=2.0)
async def broker_epoch() -> None:
    """A broker that came back empty (or lost topics) is said loudly: logged as an error, and in this
    worker's heartbeat at once (get_system_status shows it; streams/epoch.py)."""
    ep = _epoch.get("e")
    if ep is None:
        ep = _epoch["e"] = BrokerEpoch(runtime.bootstrap, who=runtime.process_id or "worker")
    if await safe_check(ep) is not None:
        try:
            await send_heartbeat()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("reset not yet reported on the status topic", error=str(exc)[:200])


@A.app.timer(interval=max(0.5, A.settings.cloudwatch_stream_interval_seconds), on_leader=True)
@survives_broker_outage
async def leader_connectors() -> None:
    """KAIZEN_CONNECTORS_IN_WORKER: one poller per source in the cluster — the group leader's."""
    if not A.settings.kaizen_connectors_in_worker or not A.settings.enable_cloudwatch_streaming:
        return
    runner = _connector.get("runner")
    if runner is None:
        from connectors.cloudwatch.runner import ConnectorRunner
        from connectors.cloudwatch.status import aws_clients
        from connectors.publisher import TelemetryPublisher

        publisher = TelemetryPublisher(runtime.bootstrap, compression_type=A.settings.compression_type)
        await publisher.start()
        runner = _connector["runner"] = ConnectorRunner(A.settings, publisher, lambda: aws_clients(A.settings))
        runner.on_poll = record_poll  # each poll is an execution of kaizen (docs/healing.md)
    await runner.poll_once()
