"""Scale-out: a second worker joins mid-stream, the first is SIGKILLed; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import orjson
import pytest

from agents.opportunities.logic.opportunities import (
    OpportunityContext,
    fold_insight,
    opportunity_id,
    problem_family,
)
from streams import topics as T
from streams.records import TelemetryInsight
from tests.conftest import Backend
from tests.integration.test_cycle import (
    _cmd,
    _events,
    _has,
    _ssm,
    _terminal,
    _to_approval,
    cycle_env,
    service_factory,
)
from tests.integration.test_cycle import _send as _send_cmd
from tests.kafka_utils import collect, envelope, produce, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

__all__ = ["cycle_env", "service_factory"]  # fixtures of the improvement-cycle tests, reused here

BASE = 1_700_000_000


def _points(prefix: str, phase: str, series: int, n: int) -> list[dict[str, Any]]:
    """n points of `series` request-count series spread over 8 tenants (so over the partitions)."""
    return [{"metric_name": "Requests", "value": 50.0 + (i % 5), "unit": "Count", "timestamp": BASE + (i // series) * 60,
             "tenant_id": f"{prefix}-{i % 8}", "namespace": "Test/Scale", "dimensions": {"service": f"svc-{i % series}"},
             "event_id": f"{prefix}-{phase}-{i}"} for i in range(n)]


def _spike(tenant: str, host: str, start: int) -> list[dict[str, Any]]:
    """40 quiet latency points then 12 at triple the level: the default latency trend rule (> +20 %) fires."""
    vals = [100.0 + (i % 3) for i in range(40)] + [300.0] * 12
    return [{"metric_name": "Latency", "value": v, "unit": "Milliseconds", "timestamp": BASE + (start + i) * 60,
             "tenant_id": tenant, "namespace": "Test/Scale", "dimensions": {"service": "checkout", "host": host},
             "event_id": f"{tenant}-lat-{host}-{i}"} for i, v in enumerate(vals)]


def _rebuilt(log_text: str) -> dict[str, int]:
    """Deltas each store rebuilt from its changelog, summed over partitions, as the worker logged them."""
    out: dict[str, int] = {}
    for line in log_text.splitlines():
        start = line.find("{")
        if start < 0 or '"state rebuilt"' not in line:
            continue
        try:
            rec = orjson.loads(line[start:])
        except orjson.JSONDecodeError:
            continue
        out[rec["store"]] = out.get(rec["store"], 0) + int(rec["deltas"])
    return out


async def _send(bootstrap: str, records: list[dict[str, Any]], per: int = 50) -> None:
    """Envelopes keyed by tenant, as the raw topics are (dedup state lives with the raw partition)."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_tenant.setdefault(r["tenant_id"], []).append(r)
    for tenant, recs in by_tenant.items():
        await produce(bootstrap, T.RAW_TOPICS["metric"], [envelope(recs[i:i + per]) for i in range(0, len(recs), per)],
                      key=tenant.encode())


async def test_second_worker_joins_then_first_is_killed(backend: Backend) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    tenant = f"{prefix}-0"  # the latency episodes' tenant
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-scale-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_BROKER_SESSION_TIMEOUT": "2", "CLOUDWATCH_EVENT_DEDUP_WINDOW_SECONDS": "3600"}
    mine = lambda _t, r: str(r.get("tenant_id", "")).startswith(prefix)  # noqa: E731
    phase_a = _points(prefix, "a", 40, 1200) + _spike(tenant, "h1", 0)
    phase_b = _points(prefix, "b", 40, 800)
    phase_c = _points(prefix, "c", 40, 800) + _spike(tenant, "h2", 100)
    w1 = start_kaizen(["worker"], env, "scale-w1")
    w2 = None
    try:
        await _send(backend.kafka_bootstrap, phase_a)
        ids_a = {r["event_id"] for r in phase_a}
        got = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]],
                            lambda p: ids_a <= {r["event_id"] for _, r in p}, keep=mine, timeout=120)
        assert ids_a <= {r["event_id"] for _, r in got}, "phase A not processed by the first worker"

        # The second worker joins while phase B is being produced.
        w2 = start_kaizen(["worker"], env, "scale-w2")
        for i in range(0, len(phase_b), 100):
            await _send(backend.kafka_bootstrap, phase_b[i:i + 100])
            await asyncio.sleep(0.4)
        ids_ab = ids_a | {r["event_id"] for r in phase_b}
        got = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]],
                            lambda p: ids_ab <= {r["event_id"] for _, r in p}, keep=mine, timeout=120)
        assert ids_ab <= {r["event_id"] for _, r in got}, "phase B lost while the group rebalanced"
        await asyncio.sleep(1.5)  # changelog deltas and checkpoints of both workers are on the broker

        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(timeout=10)
        # New records, the second latency episode, and every phase-A record again (must be dropped).
        await _send(backend.kafka_bootstrap, phase_c + phase_a)
        ids_all = ids_ab | {r["event_id"] for r in phase_c}
        got = await collect(backend.kafka_bootstrap, [T.CLEAN_TOPICS["metric"]],
                            lambda p: ids_all <= {r["event_id"] for _, r in p}, keep=mine, timeout=120, settle=3.0)
        seen = [r["event_id"] for _, r in got]
        assert ids_all <= set(seen), f"records lost: {len(ids_all - set(seen))}"
        extra_a = sum(1 for e in seen if e in ids_a) - len(ids_a)
        assert extra_a == 0, f"{extra_a} phase-A records passed dedup again: dedup state not recovered"

        def both_episodes(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
            series = " ".join(str(r.get("evidence", {}).get("series", "")) for t, r in pairs if t == T.INSIGHTS)
            return "host=h1" in series and "host=h2" in series and any(
                t == T.OPPORTUNITIES and r.get("occurrences", 0) >= 2 for t, r in pairs)

        insights = await collect(backend.kafka_bootstrap, [T.INSIGHTS, T.OPPORTUNITIES], both_episodes,
                                 keep=mine, timeout=120, settle=2.0)
        by_opp: dict[str, dict[str, TelemetryInsight]] = {}
        for topic, rec in insights:
            if topic == T.INSIGHTS and rec.get("affected_component") == "checkout":
                ins = TelemetryInsight.model_validate(rec)
                oid = opportunity_id(ins.tenant_id, ins.affected_component, problem_family(ins))
                by_opp.setdefault(oid, {})[ins.insight_id] = ins

        def incidents(found: dict[str, TelemetryInsight]) -> int:
            """The occurrences these distinct insights count (findings of one incident count once)."""
            opp = None
            for ins in sorted(found.values(), key=lambda i: (i.timestamp, i.insight_id)):
                opp = fold_insight(opp, ins, ins.timestamp, OpportunityContext())
            return opp.occurrences if opp is not None else 0
        opps = {r["opportunity_id"]: r for t, r in insights if t == T.OPPORTUNITIES and r["opportunity_id"] in by_opp}
        assert opps, f"no opportunity for the latency episodes; insights: {by_opp}"
        hosts = {i for _, r in insights for i in [r.get("evidence", {}).get("series", "")] if "host=" in i}
        assert any("host=h1" in h for h in hosts) and any("host=h2" in h for h in hosts), hosts
        for oid, opp in opps.items():
            # The survivor folded the post-kill insights into the opportunity the killed worker built.
            assert opp["occurrences"] == incidents(by_opp[oid]), (oid, opp["occurrences"], list(by_opp[oid]))
        assert max(o["occurrences"] for o in opps.values()) >= 2

        deadline = time.monotonic() + 60  # generous: the log line may trail on a busy machine
        rebuilt: dict[str, int] = {}
        while time.monotonic() < deadline:
            rebuilt = _rebuilt(w2.log_path.read_text(errors="replace")) if w2.log_path else {}
            if all(rebuilt.get(s, 0) > 0 for s in ("dedup.metric", "detectors", "opportunities")):
                break
            await asyncio.sleep(0.5)
        for store in ("dedup.metric", "detectors", "opportunities"):
            assert rebuilt.get(store, 0) > 0, f"survivor did not rebuild {store} from its changelog: {rebuilt}"
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()


async def test_improvement_survives_scale_out_and_kill_one_deployment(backend: Backend, cycle_env: dict[str, str],
                                                                     service_factory: Any) -> None:
    """Two workers share the group; the one running an improvement's monitoring is SIGKILLed; the
    survivor finishes it from the improvements changelog: one canary deployment, one verdict."""
    ssm = _ssm(backend)
    tenant = f"scale-{uuid.uuid4().hex[:6]}"
    ssm.put_parameter(Name=f"/kaizen/{tenant}/api/cache_size", Value="1024", Type="String", Overwrite=True)
    # Two workers joining on a busy machine can rebalance for longer than the usual 30 s command age:
    # the cycle's trigger must not be skipped as stale meanwhile.
    env = {**cycle_env, "MONITORING_DURATION_SECONDS": "12", "KAIZEN_BROKER_SESSION_TIMEOUT": "2",
           "KAIZEN_COMMAND_MAX_AGE_SECONDS": "180"}
    workers = [start_kaizen(["worker"], env, "scale-cycle-w1")]
    try:
        service_factory(tenant, "api", "good")
        workers.append(start_kaizen(["worker"], env, "scale-cycle-w2"))  # joins while the service reports
        # The group is settled when both members logged an assignment: trigger the cycle after that.
        deadline = asyncio.get_running_loop().time() + 120
        while asyncio.get_running_loop().time() < deadline and not all(
                w.log_path and w.log_path.exists() and "partitions assigned" in w.log_path.read_text(errors="replace")
                for w in workers):
            await asyncio.sleep(0.5)
        imp = await _to_approval(backend, tenant, "api")
        await _send_cmd(backend, T.COMMANDS, imp, _cmd("approve", "bob", ["approver"], tenant, imp))
        await _events(backend, tenant, _has("monitoring"))
        # Kill the worker that is running this improvement (the one whose log names it), else the first.
        owner = next((w for w in workers if w.log_path and imp in w.log_path.read_text(errors="replace")), workers[0])
        os.kill(owner.pid, signal.SIGKILL)
        owner.proc.wait(10)
        evs = await _events(backend, tenant, _terminal, timeout=90, settle=3.0)
        survivor = next(w for w in workers if w is not owner)
        rebuilt = _rebuilt(survivor.log_path.read_text(errors="replace")) if survivor.log_path else {}
    finally:
        for w in workers:
            w.stop()
    assert rebuilt.get("improvements", 0) > 0, f"the survivor did not rebuild the improvement: {rebuilt}"
    ids = {e["event_id"]: e for e in evs}
    canary = [e for e in ids.values() if e["status"] == "monitoring"
              and e["data"].get("deployment", {}).get("stage") == "canary"]
    verdicts = [e for e in ids.values() if e["status"] in ("completed", "rolled_back", "failed")]
    assert len(canary) == 1, [(e["status"], e["data"].get("deployment")) for e in evs]
    assert len(verdicts) == 1, verdicts
