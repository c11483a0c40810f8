"""Detectors of revoked partitions are checkpointed before the partition moves (agents/scoring/agent.py)."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

from agents.scoring import agent as scoring
from agents.scoring.logic.series import SeriesModel

TP = namedtuple("TP", "topic partition")


class FakeStore:
    source_topic = "telemetry.metrics.raw"

    def __init__(self) -> None:
        self.appended: list[tuple[int, Any]] = []

    async def append(self, partition: int, delta: Any) -> list[Any]:
        self.appended.append((partition, delta))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]

    def loaded(self, partition: int) -> bool:
        return True


async def test_learned_detectors_are_checkpointed_and_dropped_on_revocation() -> None:
    store = FakeStore()
    state = scoring.ScoringState(store)  # type: ignore[arg-type]
    try:
        pm = scoring.PartitionModels({}, cap=10)
        learned, quiet = SeriesModel.new("Latency"), SeriesModel.new("Latency")
        learned.observe(1_700_000_000.0, 5.0)
        pm.models = {"a|learned": learned, "a|quiet": quiet}
        state.partitions[1] = pm
        state.partitions[2] = scoring.PartitionModels({}, cap=10)
        n = await scoring.checkpoint_revoked({TP(FakeStore.source_topic, 1), TP("other.topic", 2)}, 1_700_000_100.0)
        assert n == 1 and [p for p, _ in store.appended] == [1]
        assert set(store.appended[0][1]["set"]) == {"a|learned"}, "only detectors that learned since a checkpoint"
        restored = SeriesModel.restore("Latency", __import__("base64").b64decode(store.appended[0][1]["set"]["a|learned"]))
        assert restored.detector is not None
        assert 1 not in state.partitions and 2 in state.partitions, "the revoked partition is let go, the other kept"
    finally:
        scoring._STATES.remove(state)
