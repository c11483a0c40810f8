"""The read model against the real broker: complete initial load across partitions, tailing, tombstones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from mcp_server.readmodel import ReadModel
from streams import topics as t
from streams.records import ImprovementEvent, ImprovementOpportunity

RUN = uuid.uuid4().hex[:6]
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """This module asserts on whole state topics: it gets a broker of its own (see tests/conftest.py)."""
    return own_backend


def _opp(i: int) -> ImprovementOpportunity:
    return ImprovementOpportunity(opportunity_id=f"rm-{RUN}-{i}", title=str(i), description="d", impact_score=i,
                                  tenant_id=f"rm-{RUN}", problem_type="latency", first_seen=NOW, last_seen=NOW)


async def test_initial_load_is_complete_and_tail_follows(backend: Any) -> None:
    warm = ReadModel(backend.kafka_bootstrap)  # creates the topics
    await warm.start()
    await warm.stop()
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(400):  # many batches over all partitions: Tansu's end offsets would under-report these
            o = _opp(i)
            await producer.send(t.OPPORTUNITIES, o.to_bytes(), key=o.opportunity_id.encode())
            if i % 37 == 0:
                await producer.flush()
        await producer.flush()
        parts = {p for p in (await producer.partitions_for(t.OPPORTUNITIES))}
        assert len(parts) > 1

        rm = ReadModel(backend.kafka_bootstrap)
        await rm.start()  # returns once a poll came back empty
        try:
            mine = {k for k in rm.views.opportunities if k.startswith(f"rm-{RUN}-")}
            assert len(mine) == 400, f"initial load saw {len(mine)} of 400"
            ranked = rm.views.ranking(f"rm-{RUN}")
            assert ranked[0].opportunity_id == f"rm-{RUN}-399"

            ev = ImprovementEvent(event_id=f"rm-{RUN}-ev", improvement_id=f"rm-{RUN}-imp", status="deploying",
                                  timestamp=NOW, tenant_id=f"rm-{RUN}")
            await producer.send_and_wait(t.IMPROVEMENT_EVENTS, ev.to_bytes(), key=ev.improvement_id.encode())
            await producer.send_and_wait(t.OPPORTUNITIES, None, key=f"rm-{RUN}-0".encode())  # tombstone
            seen = await rm.wait_for(lambda v: v.execution(f"rm-{RUN}-imp") is not None
                                     and f"rm-{RUN}-0" not in v.opportunities, 10)
            assert seen, "the tail did not pick up the new event and the tombstone"
            assert rm.views.execution(f"rm-{RUN}-imp").status == "deploying"  # type: ignore[union-attr]
            assert rm.broker_reachable and rm.views.decode_errors.get(t.OPPORTUNITIES, 0) == 0
        finally:
            await rm.stop()
    finally:
        await producer.stop()
