"""Self-healing on the live path: candidate observations → the owning worker → cooldown store → effects, history."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import structlog
from pydantic import ValidationError

from agents.healing.history import history_lines, load_healing_config
from agents.healing.logic.effects import Effect, effect_for
from agents.healing.logic.healing import (
    ActionPlan,
    ActionRegistry,
    HealingConfig,
    Observation,
    TriggerFiring,
    TriggerFramework,
    metric_observation_fields,
)
from streams import app as A
from streams.metric_codec import LeanPoint
from streams.state import ChangelogStore, start_agent_store

log = structlog.get_logger(__name__)

WATCHED = frozenset({"Duration", "Latency", "ResponseTime", "ErrorRate", "TestFailureRate", "Retries",
                     "RetryCount", "TokensUsed", "CostUSD"})
FORWARD_EVERY_SECONDS = 1.0  # of observation time, per (tenant, component, metric)
STATS: dict[str, int] = {"candidates": 0, "firings": 0, "actions": 0, "effects": 0, "suppressed": 0}


def observation_key(tenant_id: str, component: str) -> bytes:
    """healing.observations key: every observation of one component goes to one partition, one owner."""
    return f"{tenant_id}|{component}".encode()


async def forward(obs: Observation) -> None:
    """Hand an observation that crosses a threshold to the worker owning its component."""
    STATS["candidates"] += 1
    await A.healing_observations_topic.send(key=observation_key(obs.tenant_id, obs.component),
                                            value=orjson.dumps(obs.model_dump(mode="json", exclude_none=True)))


class Healing:
    """The metric-stream side: picks the points that cross a threshold (cooldown aside) and forwards
    them; the decision (cooldown, firing, effects) is made by the partition owner (`evaluate_observations`)."""

    def __init__(self, config: HealingConfig | None = None) -> None:
        self.config = config or load_healing_config()
        self.triggers = TriggerFramework(self.config)
        self.baselines: dict[tuple[str, str], float] = {}
        self._forwarded: dict[tuple[str, str, str], float] = {}  # (tenant, component, metric) -> observation time

    async def observe(self, points: list[LeanPoint]) -> int:
        """Evaluate scored points (lean points, see streams/metric_codec.py); returns how many were forwarded."""
        sent = 0
        for p in points:
            name = p["metric_name"]
            if name not in WATCHED:
                continue
            key = (p["tenant_id"], p["component"])
            baseline = self.baselines.get(key)
            fields = metric_observation_fields(name, float(p["value"]), p["unit"], baseline)
            if fields is None:
                continue
            duration = fields.get("duration_s")
            if duration is not None:
                # slow EWMA of the duration as the baseline of duration_increase (≥ 150 %)
                self.baselines[key] = duration if baseline is None else 0.98 * baseline + 0.02 * duration
            if not self.triggers.may_fire(fields):
                continue
            # A sustained condition crosses on every point: one per series and second is enough for the
            # owner, whose cooldown holds the rest back anyway.
            ts, seen = float(p["timestamp"]), (p["tenant_id"], p["component"], name)
            last = self._forwarded.get(seen)
            if last is not None and 0.0 <= ts - last < FORWARD_EVERY_SECONDS:
                continue
            self._forwarded[seen] = ts
            at = datetime.fromtimestamp(ts, UTC)
            await forward(Observation.model_validate({
                "component": p["component"], "tenant_id": p["tenant_id"], "timestamp": at, "source": "cloudwatch",
                "ref": p["event_id"], **fields}))
            sent += 1
        return sent


class Evaluator:
    """The owner side: triggers with their cooldowns in a changelog store partitioned like
    healing.observations, so one worker decides for a component and a restart or rebalance keeps them."""

    def __init__(self, store: ChangelogStore[dict[str, Any]], config: HealingConfig | None = None) -> None:
        self.store = store
        self.config = config or load_healing_config()
        self.triggers = TriggerFramework(self.config)
        self.actions = ActionRegistry(self.config)

    async def decide(self, partition: int, obs: Observation) -> tuple[list[TriggerFiring], list[ActionPlan]]:
        """Firings and planned actions of one observation; the cooldown updates are durable before return."""
        state = await self.store.state(partition)
        changes: dict[str, float] = {}
        view = ChainMap(changes, state)  # writes land in `changes`, reads see both
        at = obs.timestamp
        before = sum(self.triggers.suppressed.values())
        firings = self.triggers.evaluate(obs, at, view)
        STATS["suppressed"] += sum(self.triggers.suppressed.values()) - before
        if not firings:
            return [], []
        due = self.triggers.comprehensive_due(view, obs.tenant_id, obs.component, at)
        plans = self.actions.actions_for_all(firings, {(obs.tenant_id, obs.component): due})
        await self.store.record(partition, {"set": changes}, wait=True)
        return firings, plans


def effects_of(firings: Iterable[TriggerFiring], plans: Iterable[ActionPlan], config: dict[str, Any],
               now: datetime) -> list[Effect]:
    by_trigger = {(f.trigger, f.tenant_id, f.component): f for f in firings}
    first = next(iter(by_trigger.values()), None)
    out: list[Effect] = []
    for plan in plans:
        firing = by_trigger.get((plan.trigger, plan.tenant_id, plan.component), first)
        if firing is None:
            continue
        eff = effect_for(plan, firing, now, config, A.settings.llm_max_tokens, A.settings.max_concurrent_improvements)
        if eff is not None:
            out.append(eff)
    return out


async def publish(firings: list[TriggerFiring], plans: list[ActionPlan], effects: list[Effect]) -> None:
    """Effects first (a command on `commands`, a policy on `config.changes`), then the history lines."""
    for eff in effects:
        if eff.command is not None:
            await A.commands_topic.send(key=str(eff.command.get("tenant_id") or "healing").encode(),
                                        value=orjson.dumps(eff.command))
        elif eff.config_key is not None:
            await A.config_topic.send(key=eff.config_key.encode(), value=orjson.dumps(eff.config_value))
    for key, line in history_lines(firings, plans, effects, datetime.now(UTC)):
        await A.healing_topic.send(key=key, value=line)
    STATS["firings"] += len(firings)
    STATS["actions"] += len(plans)
    STATS["effects"] += len(effects)


_evaluator: dict[str, Evaluator] = {}
_healing: dict[str, Healing] = {}


def healing() -> Healing:
    h = _healing.get("h")
    if h is None:
        h = _healing["h"] = Healing()
    return h


@A.app.agent(A.healing_observations_topic, name="healing")
async def evaluate_observations(stream: faust.StreamT[bytes]) -> None:
    from agents.improvement.context import step_context

    ev = _evaluator.get("e")
    if ev is None:
        store: ChangelogStore[dict[str, Any]] = await start_agent_store(
            "healing-cooldowns", A.healing_observations_topic.get_topic_name())
        ev = _evaluator["e"] = Evaluator(store)
    async for event in stream.events():
        try:
            obs = Observation.model_validate_json(event.value)
        except ValidationError as exc:
            log.error("invalid healing observation", error=str(exc)[:300])
            continue
        firings, plans = await ev.decide(event.message.partition, obs)
        if not firings:
            continue
        ctx = await step_context()
        effects = effects_of(firings, plans, ctx.views.config, datetime.now(UTC))
        await publish(firings, plans, effects)
        log.warning("self-healing triggers fired", component=obs.component, tenant=obs.tenant_id,
                    triggers=[f.trigger for f in firings], actions=[p.action for p in plans],
                    effects=[e.kind for e in effects])
