"""Fault tests: the broker stopped and restarted under a running worker; a worker SIGKILLed mid-backlog.

Covered elsewhere (not duplicated here): SIGKILL during an improvement cycle —
tests/integration/test_cycle.py::test_sigkill_during_monitoring_one_deployment_one_verdict; AWS endpoint
down and back (breaker, fallback, gap filled) — test_connectors_cloudwatch.py::
test_outage_opens_breaker_uses_fallback_and_fills_gap; MCP without / with a wrong / another tenant's token —
test_mcp_server.py::test_no_or_wrong_token_is_401 and ::test_tenant_scoped_token_cannot_see_or_touch_other_tenant;
10,000 fuzzed bad records — test_fuzz_deadletter.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kaizen.embedded import ManagedProcess, start_tansu
from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import ARTIFACTS, collect, envelope, produce, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

BASE = 1_700_000_000


def _points(tenant: str, tag: str, n: int) -> list[dict[str, Any]]:
    return [{"metric_name": "Requests", "value": float(i % 9), "unit": "Count", "timestamp": BASE + i * 60,
             "tenant_id": tenant, "namespace": "Test/Faults", "dimensions": {"service": f"svc-{i % 7}"},
             "event_id": f"{tenant}-{tag}-{i}"} for i in range(n)]


async def _send(bootstrap: str, tenant: str, recs: list[dict[str, Any]], per: int = 100) -> None:
    await produce(bootstrap, T.RAW_TOPICS["metric"], [envelope(recs[i:i + per]) for i in range(0, len(recs), per)],
                  key=tenant.encode())


def _ids_on_clean(tenant: str):  # type: ignore[no-untyped-def]
    return lambda _t, r: r.get("tenant_id") == tenant


@pytest.fixture
def own_broker() -> Iterator[list[ManagedProcess]]:
    """A broker of this test's own (it is stopped and restarted), in a list so the test can replace it."""
    procs = [start_tansu(0, ARTIFACTS / "logs" / "faults-broker")]
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


async def _all_clean(bootstrap: str, tenant: str, ids: set[str], timeout: float) -> set[str]:
    pairs = await collect(bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: ids <= {r["event_id"] for _, r in p},
                          keep=_ids_on_clean(tenant), timeout=timeout)
    return {r["event_id"] for _, r in pairs}


async def test_broker_stopped_and_restarted_pipeline_resumes(backend: Backend, own_broker: list[ManagedProcess]
                                                             ) -> None:
    port = own_broker[0].port
    bootstrap = f"127.0.0.1:{port}"
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = {**backend.aws_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAIZEN_APP_ID": f"kz-brk-{uuid.uuid4().hex[:6]}",
           "KAFKA_TOPIC_PARTITIONS": "4", "KAIZEN_BROKER_SESSION_TIMEOUT": "2"}
    worker = start_kaizen(["worker"], env, "faults-broker-restart-worker")
    try:
        before = _points(tenant, "before", 300)
        await _send(bootstrap, tenant, before)
        ids = {r["event_id"] for r in before}
        assert ids <= await _all_clean(bootstrap, tenant, ids, 40), "pipeline did not run before the outage"

        own_broker[0].stop()
        await asyncio.sleep(2)  # the worker sees the broker gone (connection errors, retries)
        own_broker.append(start_tansu(port, ARTIFACTS / "logs" / "faults-broker"))
        # The embedded broker keeps everything in memory: it comes back empty (no topics, offsets,
        # group or changelogs). A real Kafka keeps all of them and the worker simply reconnects.
        after = _points(tenant, "after", 300)
        ids_after = {r["event_id"] for r in after}
        await _send(bootstrap, tenant, after)
        got = await _all_clean(bootstrap, tenant, ids_after, 12)
        if not ids_after <= got:
            # Against an emptied broker the old worker either exits (a store rebuild cannot reach it)
            # or keeps its stale group membership; the deployment restarts it (compose: restart:
            # unless-stopped) and the restarted worker must pick the records up.
            worker.stop()
            worker = start_kaizen(["worker"], env, "faults-broker-restart-worker-2")
            got = await _all_clean(bootstrap, tenant, ids_after, 40)
        assert ids_after <= got, f"pipeline did not resume after the broker restart: {len(ids_after - got)} missing"
        assert worker.alive(), "the worker died after the broker came back"
    finally:
        worker.stop()


async def test_worker_sigkilled_mid_backlog_replacement_processes_everything_once(backend: Backend) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-kill-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_BROKER_SESSION_TIMEOUT": "2", "CLOUDWATCH_EVENT_DEDUP_WINDOW_SECONDS": "3600"}
    recs = _points(tenant, "backlog", 20_000)
    await _send(backend.kafka_bootstrap, tenant, recs, per=500)
    ids = {r["event_id"] for r in recs}
    w1 = start_kaizen(["worker"], env, "faults-kill-w1")
    try:
        # Kill it once it is part-way through the backlog.
        partial = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= 2_000,
                                keep=_ids_on_clean(tenant), timeout=40)
        assert len(partial) >= 2_000, "the first worker made no progress"
        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(timeout=10)
    finally:
        w1.stop()
    w2 = start_kaizen(["worker"], env, "faults-kill-w2")
    try:
        pairs = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]],
                              lambda p: ids <= {r["event_id"] for _, r in p}, keep=_ids_on_clean(tenant),
                              timeout=50, settle=2.0)
        seen = [r["event_id"] for _, r in pairs]
        assert ids <= set(seen), f"records lost across the SIGKILL: {len(ids - set(seen))}"
        # At least once: records whose dedup delta was not yet on the broker when the worker died may
        # pass twice; the changelog keeps that to the last in-flight batch, not the backlog.
        doubled = len(seen) - len(set(seen))
        assert doubled <= 1_000, f"{doubled} records passed twice: dedup state was not recovered"
    finally:
        w2.stop()


