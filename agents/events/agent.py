"""Events agent: alarms, Lambda completions and deployments → insights; a critical ALARM → emergency cycle."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime

import faust
import orjson
import structlog

from agents.audit import audit_record, write_audit
from agents.events.logic.events import alarm_insight, event_component, lambda_insight
from agents.routing import insight_partition
from streams import app as A
from streams.commands import TriggerCycle
from streams.metrics import INSIGHTS_GENERATED
from streams.records import CloudWatchEvent, TelemetryInsight

log = structlog.get_logger(__name__)
STATS: dict[str, int] = defaultdict(int)


async def _insight(ins: TelemetryInsight) -> None:
    await A.insights_topic.send(key=ins.insight_id.encode(), value=ins.to_bytes(),
                                partition=insight_partition(ins, A.settings.kafka_topic_partitions))
    INSIGHTS_GENERATED.labels("events").inc()


def emergency_command(ev: CloudWatchEvent, ins: TelemetryInsight) -> TriggerCycle:
    """The improvement-cycle manual's emergency cycle: last hour, one focused improvement."""
    cid = "cmd-emergency-" + hashlib.sha1(ev.event_id.encode()).hexdigest()[:16]
    # Stamped with the alarm's own time: a replayed old alarm yields a stale command, which is skipped.
    return TriggerCycle(command_id=cid, timestamp=min(ev.timestamp, datetime.now(UTC)),
                        actor="alarm:" + str(ev.detail.get("alarm_name", "?")), roles=["system"],
                        tenant_id=ev.tenant_id, cycle_kind="emergency", analysis_window_hours=1, max_improvements=1,
                        component=ins.affected_component, problem_type=ins.problem_type or None,
                        alarm_event_id=ev.event_id, alarm_at=ev.timestamp)


async def handle_event(ev: CloudWatchEvent) -> None:
    if ev.event_type == "alarm":
        ins = alarm_insight(ev)
        if ins is None:
            return
        await _insight(ins)
        STATS["alarms"] += 1
        if ins.severity == "critical":
            cmd = emergency_command(ev, ins)
            await A.commands_topic.send(key=ev.tenant_id.encode(), value=cmd.to_bytes())
            STATS["emergency_cycles"] += 1
            log.warning("critical alarm: emergency cycle requested", alarm=ev.detail.get("alarm_name"),
                        tenant=ev.tenant_id)
    elif ev.event_type == "lambda_completion":
        ins = lambda_insight(ev)
        if ins is not None:
            await _insight(ins)
    elif ev.event_type == "deployment":
        await write_audit(audit_record("external_deployment", ev.source, tenant_id=ev.tenant_id,
                                       target=event_component(ev.detail, ev.source), detail=ev.detail),
                          A.audit_topic, A.settings.kaizen_data_dir / "audit.jsonl")
    STATS[ev.event_type] += 1


@A.app.agent(A.clean_topics["event"], name="cloudwatch-events")
async def cloudwatch_events(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        raw = orjson.loads(event.value) if event.value else {}
        for item in raw.get("records", [raw]) if isinstance(raw, dict) else []:
            await handle_event(CloudWatchEvent.model_validate(item))
