"""Self-healing triggers on the metric stream: fire, plan actions, record history (JSONL + topic)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import structlog

from agents.healing.history import HealingHistory, load_healing_config
from agents.healing.logic.healing import (
    ActionRegistry,
    Observation,
    TriggerFramework,
    metric_observation_fields,
)
from streams import app as A
from streams.metric_codec import LeanPoint

log = structlog.get_logger(__name__)

# Under KAIZEN_DATA_DIR: the directory `kaizen healing history/check` read and write (the seed's
# logs/self_healing layout), so the worker's firings and the CLI's share one history.
HISTORY_DIR = "self_healing"
WATCHED = frozenset({"Duration", "Latency", "ResponseTime", "ErrorRate", "TestFailureRate", "Retries",
                     "RetryCount", "TokensUsed", "CostUSD"})


class Healing:
    """The trigger framework and action registry of one worker, with their history."""

    def __init__(self) -> None:
        config = load_healing_config()
        self.triggers = TriggerFramework(config)
        self.actions = ActionRegistry(config)
        self.history = HealingHistory(A.settings.kaizen_data_dir / HISTORY_DIR)
        self.baselines: dict[tuple[str, str], float] = {}

    async def observe(self, points: list[LeanPoint]) -> int:
        """Evaluate the triggers on scored points (lean points, see streams/metric_codec.py)."""
        firings = []
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
            at = datetime.fromtimestamp(float(p["timestamp"]), UTC)
            obs = Observation.model_validate({"component": p["component"], "tenant_id": p["tenant_id"],
                                              "timestamp": at, "source": "cloudwatch", "ref": p["event_id"],
                                              **fields})
            firings.extend(self.triggers.evaluate(obs, at))
        if not firings:
            return 0
        plans = self.actions.actions_for_all(firings)
        await self.history.record_async(firings, plans)
        now = datetime.now(UTC).isoformat()
        for f in firings:
            await A.healing_topic.send(key=f.trigger.encode(), value=orjson.dumps(
                {"kind": "trigger", "recorded_at": now, **f.model_dump(mode="json")}))
        for a in plans:
            await A.healing_topic.send(key=a.trigger.encode(), value=orjson.dumps(
                {"kind": "action", "recorded_at": now, **a.model_dump(mode="json")}))
        log.warning("self-healing triggers fired", triggers=[f.trigger for f in firings],
                    actions=[a.action for a in plans])
        return len(firings)


_healing: dict[str, Healing] = {}


def healing() -> Healing:
    h = _healing.get("h")
    if h is None:
        h = _healing["h"] = Healing()
    return h
