"""Equivalence at scale: one recorded input gives the same opportunities on one worker and on two.

The input: metrics with ActiveUsers (a different user count per component, so a user count taken from
the wrong component shows), latency episodes, recurring error logs, alarms, and two improvement outcomes.
Run 1: one worker. Run 2: two workers — the second joins while the input is being produced and the first
leaves before the outcomes arrive (two partition moves). Each run has a broker of its own. The opportunities
must have the same ids and impact scores within 1 %.

Not compared here: improvement verdicts and healing history (their stages are covered by their own
scale-out tests; this input starts no improvement and fires no healing trigger).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from agents.opportunities.logic.opportunities import opportunity_id
from agents.routing import partition_of
from kaizen.embedded import ManagedProcess, start_tansu
from streams import topics as T
from streams.records import TelemetryInsight
from tests.conftest import Backend
from tests.kafka_utils import ARTIFACTS, collect, envelope, produce, start_kaizen

TENANTS = ("eq-a", "eq-b", "eq-c")
COMPONENTS = [(t, f"svc{k}") for k, t in enumerate(TENANTS * 2)]  # 6 components over 3 tenants
DB_ERRORS = COMPONENTS[:2]
ALARMS = COMPONENTS[2:4]
OUTCOMES = {COMPONENTS[0]: "rolled_back", COMPONENTS[3]: "kept"}
BASELINE, SPIKE = 200, 10  # the detector warms up on ~120 points; one anomaly at the step


def users(k: int) -> float:
    return 1000.0 * (k + 1)


def recorded_input(now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(metrics of phase 1, metrics of phase 2, logs and alarms of phase 2) — timestamps relative to `now`."""
    start = now - (BASELINE + SPIKE + 5) * 60
    phase1: list[dict[str, Any]] = []
    phase2: list[dict[str, Any]] = []
    for k, (tenant, comp) in enumerate(COMPONENTS):
        dims = {"service": comp}
        for i in range(BASELINE + SPIKE):
            rec = {"metric_name": "RequestLatency", "value": 100.0 + (i * 7) % 5 if i < BASELINE else 300.0, "unit": "Milliseconds",
                   "timestamp": start + i * 60, "tenant_id": tenant, "namespace": "Test/Eq", "dimensions": dims}
            (phase1 if i < BASELINE else phase2).append(rec)
        phase1 += [{"metric_name": "ActiveUsers", "value": users(k), "unit": "Count", "timestamp": start + i * 600,
                    "tenant_id": tenant, "namespace": "Test/Eq", "dimensions": dims} for i in range(3)]
    other: list[dict[str, Any]] = []
    for tenant, comp in DB_ERRORS:
        other += [{"log_group": f"/aws/lambda/{comp}", "severity": "ERROR", "tenant_id": tenant,
                   "timestamp": now - 3000 + i * 200, "message": f"ERROR could not connect to database db-{i % 3}: "
                   f"connection refused after {i} ms"} for i in range(14)]
    for tenant, comp in ALARMS:
        other.append({"event_type": "alarm", "source": "aws.cloudwatch", "timestamp": now - 120, "tenant_id": tenant,
                      "detail": {"alarm_name": f"{comp}-latency", "new_state": "ALARM", "old_state": "OK",
                                 "severity": "high", "metric_name": "RequestLatency", "dimensions": {"service": comp}}})
    return phase1, phase2, other


def outcome_insights(now: float) -> list[TelemetryInsight]:
    return [TelemetryInsight(
        insight_type="improvement_outcome", severity="low", affected_component=comp, affected_tenants=[tenant],
        tenant_id=tenant, problem_type="latency", confidence_score=1.0, timestamp=now, source="improvements",  # type: ignore[arg-type]
        description=f"improvement imp-{comp} {outcome}", insight_id=f"outcome-imp-{tenant}-{comp}",
        evidence={"opportunity_id": opportunity_id(tenant, comp, "latency"), "outcome": outcome,
                  "improvement_id": f"imp-{tenant}-{comp}"})
        for (tenant, comp), outcome in OUTCOMES.items()]


async def _send_metrics(bootstrap: str, recs: list[dict[str, Any]], per: int = 60) -> None:
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_tenant.setdefault(r["tenant_id"], []).append(r)
    for tenant, rs in by_tenant.items():
        await produce(bootstrap, T.RAW_TOPICS["metric"], [envelope(rs[i:i + per]) for i in range(0, len(rs), per)],
                      key=tenant.encode())


async def _send_other(bootstrap: str, recs: list[dict[str, Any]]) -> None:
    for r in recs:
        topic = T.RAW_TOPICS["event"] if "event_type" in r else T.RAW_TOPICS["log"]
        await produce(bootstrap, topic, [envelope([r])], key=r["tenant_id"].encode())


async def _send_outcomes(bootstrap: str, now: float) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for ins in outcome_insights(now):  # as the improvement engine sends them (agents/improvement/agent.py)
            await p.send_and_wait(T.INSIGHTS, ins.to_bytes(), key=ins.insight_id.encode(),
                                  partition=partition_of(ins.evidence["opportunity_id"], 4))
    finally:
        await p.stop()


EXPECTED = {opportunity_id(t, c, "latency") for t, c in COMPONENTS} | {
    opportunity_id(t, c, "database_connection") for t, c in DB_ERRORS}


def _latest(pairs: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {r["opportunity_id"]: r for t, r in pairs if t == T.OPPORTUNITIES}


def _all_there(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
    return EXPECTED <= set(_latest(pairs))


def _outcomes_in(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
    latest = _latest(pairs)
    return all(latest.get(opportunity_id(t, c, "latency"), {}).get("proposed_changes", {}).get("previous_outcomes")
               for t, c in OUTCOMES)


@pytest.fixture
def brokers() -> Iterator[list[ManagedProcess]]:
    procs: list[ManagedProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


async def _clean(bootstrap: str, n: int) -> None:
    got = await collect(bootstrap, [T.CLEAN_TOPICS["metric"]], lambda p: len(p) >= n, timeout=60)
    assert len(got) >= n, f"only {len(got)} of {n} metric points processed"


async def _run(backend: Backend, brokers: list[ManagedProcess], now: float, two_workers: bool) -> dict[str, Any]:
    broker = start_tansu(0, ARTIFACTS / "logs" / "equivalence-broker")
    brokers.append(broker)
    bootstrap = f"127.0.0.1:{broker.port}"
    env = {**backend.aws_env(), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_APP_ID": "kz-eq", "KAIZEN_BROKER_SESSION_TIMEOUT": "2",
           "CLOUDWATCH_EVENT_DEDUP_WINDOW_SECONDS": "3600"}
    phase1, phase2, other = recorded_input(now)
    workers = [start_kaizen(["worker"], env, f"equivalence-{'two' if two_workers else 'one'}-w1")]
    try:
        half = len(phase1) // 2
        await _send_metrics(bootstrap, phase1[:half])
        if two_workers:  # joins mid-input: partitions move from the first worker to it
            workers.append(start_kaizen(["worker"], env, "equivalence-two-w2"))
            await _clean(bootstrap, half)
        await _send_metrics(bootstrap, phase1[half:])
        await _clean(bootstrap, len(phase1))
        await _send_metrics(bootstrap, phase2)
        await _send_other(bootstrap, other)
        await _clean(bootstrap, len(phase1) + len(phase2))
        got = await collect(bootstrap, [T.OPPORTUNITIES], _all_there, timeout=60, settle=3.0)
        assert _all_there(got), f"opportunities missing: {EXPECTED - set(_latest(got))}"
        if two_workers:  # the first leaves: every partition moves to the second
            workers[0].stop()
        await _send_outcomes(bootstrap, now)
        got = await collect(bootstrap, [T.OPPORTUNITIES], _outcomes_in, timeout=60, settle=4.0)
        assert _outcomes_in(got), f"the outcomes were not applied ({'two workers' if two_workers else 'one'})"
        for w in workers:
            assert w.log_path is not None and "Traceback" not in w.log_path.read_text(errors="replace")
        return _latest(got)
    finally:
        for w in workers:
            w.stop()


async def test_one_worker_and_two_with_partition_moves_give_the_same_opportunities(
        backend: Backend, brokers: list[ManagedProcess]) -> None:
    now = time.time()
    one = await _run(backend, brokers, now, two_workers=False)
    two = await _run(backend, brokers, now, two_workers=True)
    assert set(one) == set(two), f"different opportunities: {set(one) ^ set(two)}"
    for k, (tenant, comp) in enumerate(COMPONENTS):
        oid = opportunity_id(tenant, comp, "latency")
        assert one[oid]["affected_users_per_hour"] == users(k), (comp, one[oid]["affected_users_per_hour"])
    diffs = {}
    for oid in one:
        a, b = one[oid]["impact_score"], two[oid]["impact_score"]
        assert one[oid]["affected_users_per_hour"] == two[oid]["affected_users_per_hour"], oid
        diffs[oid] = abs(a - b) / max(abs(a), 1e-9)
        fields = ("impact_score", "occurrences", "frequency_per_day", "performance_gain_percentage",
                  "affected_users_per_hour", "confidence_score", "severity", "outcome_adjustment")
        assert diffs[oid] <= 0.01, {f: (one[oid][f], two[oid][f]) for f in fields} | {
            "evidence": ([e["insight_id"] for e in one[oid]["telemetry_evidence"]],
                         [e["insight_id"] for e in two[oid]["telemetry_evidence"]])}
    # The outcomes were learned everywhere: the rolled-back one lowered its family's outcome adjustment.
    rolled = opportunity_id(*COMPONENTS[0], "latency")
    assert one[rolled]["outcome_adjustment"] == two[rolled]["outcome_adjustment"] < 1.0
    print("equivalent opportunities:", len(one), "max impact difference %.4f %%" % (100 * max(diffs.values())))
