"""Broker pause: the embedded broker frozen for 20 s (SIGSTOP, then SIGCONT, by pid) while records flow.

Nothing is lost: every record produced before, during and after the pause is on the clean topic, the
worker is alive and its log has no traceback, and the MCP read model, running through the pause, is fresh
again within 10 s of the broker's return. (Faust flushes its producer — which also carries kaizen's
changelog deltas, streams/state.py — before it commits a source offset, so no raw record is committed
before its outputs are on the broker.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from kaizen.embedded import ManagedProcess, start_tansu
from mcp_server.readmodel import ReadModel
from streams import topics as T
from streams.records import StatusReport
from tests.conftest import Backend
from tests.kafka_utils import ARTIFACTS, collect, envelope, start_kaizen

TOTAL = 15_000
PAUSE_SECONDS = 20.0


@pytest.fixture
def own_broker() -> Iterator[ManagedProcess]:
    broker = start_tansu(0, ARTIFACTS / "logs" / "faults-pause-broker")
    try:
        yield broker
    finally:
        os.kill(broker.pid, signal.SIGCONT)  # never leave it frozen
        broker.stop()


async def test_twenty_second_broker_pause_loses_nothing(backend: Backend, own_broker: ManagedProcess) -> None:
    bootstrap = f"127.0.0.1:{own_broker.port}"
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = {**backend.aws_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAIZEN_APP_ID": f"kz-pause-{uuid.uuid4().hex[:6]}",
           "KAFKA_TOPIC_PARTITIONS": "4", "KAIZEN_BROKER_SESSION_TIMEOUT": "2"}
    worker = start_kaizen(["worker"], env, "faults-pause-worker")
    now = time.time()
    recs = [{"metric_name": "Requests", "value": float(i % 11), "timestamp": now - 3600 + i * 0.2, "tenant_id": tenant,
             "namespace": "Test/Pause", "dimensions": {"service": f"svc-{i % 13}"}, "event_id": f"{tenant}-{i}"}
            for i in range(TOTAL)]
    ids = {r["event_id"] for r in recs}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
    await producer.start()
    rm = ReadModel(bootstrap, partitions=4)
    try:
        await rm.start(wait_loaded=30)
        # Records flow at a steady pace; the broker is frozen a third of the way through.
        async def flow() -> None:
            for i in range(0, TOTAL, 100):
                await producer.send_and_wait(T.RAW_TOPICS["metric"], envelope(recs[i:i + 100]), key=tenant.encode())
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(flow())
        got = await collect(bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= TOTAL // 3,
                            keep=lambda _t, r: r.get("tenant_id") == tenant, timeout=40)
        assert len(got) >= TOTAL // 3, "the pipeline did not run before the pause"
        os.kill(own_broker.pid, signal.SIGSTOP)
        await asyncio.sleep(PAUSE_SECONDS)
        os.kill(own_broker.pid, signal.SIGCONT)
        back = time.monotonic()
        marker = f"marker-{uuid.uuid4().hex[:6]}"
        rec = StatusReport(process_id=marker, role="demo", timestamp=datetime.now(UTC))
        await producer.send_and_wait(T.STATUS, rec.to_bytes(), key=marker.encode())
        assert await rm.wait_for(lambda v: marker in v.status, max(1.0, 10 - (time.monotonic() - back))), \
            "the read model is not fresh within 10 s of the broker's return"
        fresh = time.monotonic() - back
        assert not rm.resets, "a pause is no reset"
        await asyncio.wait_for(sending, 90)
        got = await collect(bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: ids <= {r["event_id"] for _, r in p},
                            keep=lambda _t, r: r.get("tenant_id") == tenant, timeout=60)
        seen = {r["event_id"] for _, r in got}
        assert ids <= seen, f"{len(ids - seen)} of {TOTAL} records lost across a {PAUSE_SECONDS:.0f} s broker pause"
        assert worker.alive(), "the worker died during the pause"
        assert "Traceback" not in worker.log_path.read_text(errors="replace")
        print(f"{len(seen)} of {TOTAL} records on the clean topic after a {PAUSE_SECONDS:.0f} s pause; "
              f"read model fresh {fresh:.1f} s after the broker's return")
    finally:
        await rm.stop()
        await producer.stop()
        worker.stop()
