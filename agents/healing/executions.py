"""telemetry.executions: ExecutionMetrics (services' and kaizen's own) → trigger observations and delivered alerts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import httpx
import structlog
from pydantic import ValidationError

from agents.healing.agent import forward, healing
from agents.healing.logic.alerts import AlertEvaluator
from agents.healing.logic.execution_metrics import ExecutionMetrics
from agents.healing.logic.execution_observer import ExecutionObserver, kaizen_execution
from agents.healing.notify import DeliveryReport, Notifier
from streams import app as A
from streams.records import ImprovementEvent
from streams.runtime import survives_broker_outage

log = structlog.get_logger(__name__)
ALERTS_FILE = "alerts.jsonl"  # under KAIZEN_DATA_DIR: every alert raised by this worker
STATS: dict[str, int] = {"executions": 0, "forwarded": 0, "alerts": 0, "recorded": 0, "record_errors": 0}


def execution_key(em: ExecutionMetrics) -> bytes:
    """telemetry.executions key: one skill's executions in one partition (its windows have one owner)."""
    return f"{em.tenant_id}|{em.skill_name}".encode()


async def record_execution(em: ExecutionMetrics) -> None:
    """Publish one execution on telemetry.executions; a broker failure is logged, never raised into the
    work that was measured."""
    try:
        await A.executions_topic.send(key=execution_key(em), value=em.to_json().encode())
        STATS["recorded"] += 1
    except Exception as exc:  # noqa: BLE001 - measuring must never break the measured step
        STATS["record_errors"] += 1
        log.warning("execution metrics not recorded", skill=em.skill_name, error=f"{type(exc).__name__}: {exc}")


async def record_kaizen(skill: str, started: datetime, ok: bool, **fields: Any) -> None:
    """One of kaizen's own executions (ended now), e.g. record_kaizen("llm:bedrock", t0, True, tokens_input=...)."""
    await record_execution(kaizen_execution(skill, started, datetime.now(UTC), ok,
                                            execution_id=f"kz-{uuid.uuid4().hex[:16]}", **fields))


async def record_poll(source: str, started: datetime, ok: bool, records: int, error: str | None) -> None:
    """ConnectorRunner.on_poll of the connectors run on the worker group's leader (agents/status.py)."""
    await record_kaizen(f"connector:{source}", started, ok, error=error)


async def measured_step(status: str, work: Awaitable[list[ImprovementEvent]]) -> list[ImprovementEvent]:
    """Run one improvement step and record it as an execution of kaizen (skill improvement.<status>):
    failed when it raises or decides `failed`. Monitoring is a wait, not work: it is not recorded."""
    if status == "monitoring":
        return await work
    started = datetime.now(UTC)
    try:
        events = await work
    except Exception as exc:
        await record_kaizen(f"improvement.{status}", started, False, error=f"{type(exc).__name__}: {exc}"[:300])
        raise
    failed = next((e for e in events if e.status == "failed"), None)
    await record_kaizen(f"improvement.{status}", started, failed is None,
                        error=failed.reason[:300] if failed is not None else None)
    return events


class ExecutionsState:
    """This worker's observer, alert rules and notifier (JSONL under the data dir, webhook, daily digest)."""

    def __init__(self, data_dir: Path, webhook_url: str | None, digest: bool,
                 client: httpx.AsyncClient | None = None) -> None:
        self.observer = ExecutionObserver()
        self.alerts = AlertEvaluator()
        client = client or (httpx.AsyncClient() if webhook_url else None)
        self.notifier = Notifier(data_dir / ALERTS_FILE, webhook_url, client, digest=digest)

    async def handle(self, em: ExecutionMetrics, now: datetime) -> DeliveryReport:
        STATS["executions"] += 1
        obs, baseline = self.observer.observe(em)
        fields = obs.model_dump(include={"duration_s", "retries", "error_rate", "tokens", "baseline_tokens",
                                         "cost_usd", "test_failure_rate", "baseline_duration_s"})
        if healing().triggers.may_fire(fields):
            await forward(obs)
            STATS["forwarded"] += 1
        raised = self.alerts.evaluate(em, baseline, now)
        STATS["alerts"] += len(raised)
        return await self.notifier.dispatch(raised, now)


_state: dict[str, ExecutionsState] = {}


def executions_state() -> ExecutionsState:
    st = _state.get("s")
    if st is None:
        s = A.settings
        st = _state["s"] = ExecutionsState(s.kaizen_data_dir, s.notifications_webhook_url, s.notifications_digest)
    return st


@A.app.agent(A.executions_topic, name="executions")
async def executions(stream: faust.StreamT[bytes]) -> None:
    st = executions_state()
    async for event in stream.events():
        try:
            em = ExecutionMetrics.model_validate_json(event.value)
        except ValidationError as exc:
            log.error("invalid execution metrics", error=str(exc)[:300])
            continue
        rep = await st.handle(em, datetime.now(UTC))
        if rep.failures:
            log.warning("alert delivery failed", failures=rep.failures)


@A.app.timer(interval=60.0)
@survives_broker_outage
async def alert_digest() -> None:
    """Send the daily digest once it is due, even when no execution arrives."""
    st = _state.get("s")
    if st is not None:
        await st.notifier.tick(datetime.now(UTC))
