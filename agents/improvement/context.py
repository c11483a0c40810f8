"""The worker's shared step context: views, metrics tap, actuators and code generator, built once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from agents.healing.executions import record_kaizen
from agents.improvement.generator import CodeGenerator, provider_from_settings
from agents.improvement.journal import FILE_NAME, AppliedJournal
from agents.improvement.metrics_tap import MetricsTap
from agents.improvement.stepctx import StepContext
from connectors.actuators.base import Actuator
from connectors.actuators.git import GitActuator, ensure_repo
from connectors.llm.bedrock import CLIENT_CONFIG
from streams import app as A
from streams.runtime import runtime
from streams.views import StateViews

log = structlog.get_logger(__name__)
_ctx: dict[str, StepContext] = {}
_lock = asyncio.Lock()


def aws_client(service: str, config: Any = None) -> Any:
    import boto3

    s = A.settings
    return boto3.client(service, region_name=s.aws_region, endpoint_url=s.aws_endpoint_url, config=config)


def _git_repo() -> Path:
    return ensure_repo(A.settings.kaizen_git_repo or (A.settings.kaizen_data_dir / "repo"))


async def _actuator() -> Actuator:
    kind = A.settings.kaizen_actuator
    if kind == "ssm":
        from connectors.actuators.ssm import SSMActuator

        return SSMActuator(aws_client("ssm"))
    if kind == "git":
        return GitActuator(await asyncio.to_thread(_git_repo))
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from connectors.actuators.kafka_config import KafkaConfigActuator

    producer = AIOKafkaProducer(bootstrap_servers=runtime.bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=runtime.bootstrap, group_id=None, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    return KafkaConfigActuator(producer, consumer)


async def step_context() -> StepContext:
    """Build (once per worker) what the improvement steps use."""
    ctx = _ctx.get("c")
    if ctx is not None:
        return ctx
    async with _lock:
        ctx = _ctx.get("c")
        if ctx is not None:
            return ctx
        views = StateViews(runtime.bootstrap)
        await views.tail.start()
        try:
            await asyncio.wait_for(views.tail.caught_up.wait(), timeout=10)
        except TimeoutError:
            log.warning("state views still catching up")
        # Read back twice the baseline window when a component becomes watched: the baseline ends at the
        # deployment, which comes after the watch began; the margin absorbs broker/worker clock skew.
        tap = MetricsTap(runtime.bootstrap, watch=views, lookback_seconds=2 * A.settings.baseline_window_seconds)
        await tap.start()
        bedrock = aws_client("bedrock-runtime", CLIENT_CONFIG) if A.settings.llm_provider == "bedrock" else None
        generator = CodeGenerator(provider_from_settings(A.settings, bedrock_client=bedrock),
                                  max_tokens=A.settings.llm_max_tokens, temperature=A.settings.llm_temperature)
        generator.policy = lambda: views.config  # LLM token budget / cost cap set on config.changes
        generator.on_call = record_kaizen  # every completion becomes ExecutionMetrics (docs/healing.md)
        files = GitActuator(await asyncio.to_thread(_git_repo))
        # outside the broker: what was applied survives a broker that comes back empty (journal.py)
        journal = AppliedJournal(A.settings.kaizen_data_dir / FILE_NAME)
        ctx = StepContext(A.settings, views, tap, await _actuator(), files, generator, journal=journal)
        _ctx["c"] = ctx
        log.info("step context ready", actuator=A.settings.kaizen_actuator,
                 opportunities=len(views.opportunities), improvements=len(views.improvements))
        return ctx
