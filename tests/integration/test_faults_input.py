"""Hostile input through Tansu: every rule of the README's ingest contract, then a good record.

Each bad record is dead-lettered with its reason, the good record sent after them is scored, records in
equal records out (clean + dead-lettered), and the worker's log has no traceback (no agent restarted).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import collect, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of this module's own: the test counts whole topics."""
    return own_backend


@pytest.fixture(scope="module")
def worker(backend: Backend) -> Iterator[Any]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-hostile-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_BROKER_SESSION_TIMEOUT": "2"}
    proc = start_kaizen(["worker"], env, "faults-input-worker")
    try:
        yield proc
    finally:
        proc.stop()


def _metric(tenant: str, i: int, **over: Any) -> dict[str, Any]:
    return {"metric_name": "Latency", "value": 100.0 + i % 3, "timestamp": time.time() - 300 + i,
            "tenant_id": tenant, "namespace": "Test/Hostile", "dimensions": {"service": "api"},
            "event_id": f"{tenant}-{i}", **over}


def bad_metrics(tenant: str) -> list[tuple[str, dict[str, Any]]]:
    """(expected reason prefix, record): one per rule of the contract."""
    now = time.time()
    rules: list[tuple[str, dict[str, Any]]] = [
        ("non-finite value", {"value": "NaN"}), ("non-finite value", {"value": "nan"}),
        ("non-finite value", {"value": "Infinity"}), ("non-finite value", {"value": "-inf"}),
        ("non-finite value", {"value": "1e400"}),
        ("invalid metric record", {"value": "high"}), ("invalid metric record", {"timestamp": "yesterday"}),
        ("implausible timestamp", {"timestamp": now - 1900 * 86400}),
        ("implausible timestamp", {"timestamp": now + 3 * 3600}),
        ("implausible timestamp", {"timestamp": "9999-12-31T23:59:59Z"}),
        ("identifier too long", {"tenant_id": tenant + "x" * 600}),
        ("identifier too long", {"metric_name": "m" * 600}),
        ("identifier too long", {"dimensions": {"service": "v" * 2000}}),
        ("too many dimensions", {"dimensions": {f"d{i}": "v" for i in range(31)}}),
        ("record too large", {"dimensions": {"service": "x" * 1_048_576}}),  # the 1 MB dimension value
    ]
    return [(reason, _metric(tenant, 1000 + i, **over)) for i, (reason, over) in enumerate(rules)]


def bad_logs_and_events(tenant: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, expected reason prefix, record): the limits apply to logs and events too."""
    now = time.time()
    log = {"log_group": "/aws/lambda/api", "message": "ERROR boom", "timestamp": now - 60, "tenant_id": tenant}
    ev = {"event_type": "alarm", "source": "aws.cloudwatch", "timestamp": now - 60, "tenant_id": tenant,
          "detail": {"alarm_name": "x", "new_state": "OK", "old_state": "ALARM"}}
    return [("log", "invalid log record", {**log, "message": None}),
            ("log", "implausible timestamp", {**log, "timestamp": now + 86400}),
            ("log", "identifier too long", {**log, "log_group": "/" + "g" * 600}),
            ("log", "record too large", {**log, "message": "m" * 300_000}),
            ("event", "invalid event record", {**ev, "event_type": "explosion"}),
            ("event", "implausible timestamp", {**ev, "timestamp": "1970-01-02T00:00:00Z"}),
            ("event", "identifier too long", {**ev, "source": "s" * 600}),
            ("event", "record too large", {**ev, "detail": {"blob": "x" * 300_000}})]


async def test_logs_and_events_keep_the_contract_too(backend: Backend, worker: Any) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    cases = bad_logs_and_events(tenant)
    topics = {"log": T.RAW_TOPICS["log"], "event": T.RAW_TOPICS["event"]}
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent: dict[tuple[str, int, int], str] = {}
    try:
        for kind, reason, rec in cases:
            meta = await producer.send_and_wait(topics[kind], orjson.dumps(rec), key=tenant.encode())
            sent[(topics[kind], meta.partition, meta.offset)] = reason
        good_log = {"log_group": "/aws/lambda/api", "message": "INFO fine", "timestamp": time.time() - 5,
                    "tenant_id": tenant}
        await producer.send_and_wait(topics["log"], orjson.dumps(good_log), key=tenant.encode())
    finally:
        await producer.stop()

    def keep(topic: str, rec: dict[str, Any]) -> bool:
        if topic == T.DEADLETTER:
            return (rec.get("source_topic"), rec.get("partition"), rec.get("offset")) in sent
        return rec.get("tenant_id") == tenant

    pairs = await collect(backend.kafka_bootstrap, [T.DEADLETTER, T.CLEAN_TOPICS["log"]],
                          lambda p: sum(t == T.DEADLETTER for t, _ in p) >= len(sent) and any(
                              t == T.CLEAN_TOPICS["log"] for t, _ in p), keep=keep, timeout=40, settle=1.0)
    got = {(r["source_topic"], r["partition"], r["offset"]): r["reason"] for t, r in pairs if t == T.DEADLETTER}
    assert set(got) == set(sent), f"ended nowhere: {set(sent) - set(got)}"
    wrong = {k: (sent[k], got[k]) for k in sent if not got[k].startswith(sent[k])}
    assert not wrong, f"dead-lettered with another reason: {wrong}"
    assert [r["message"] for t, r in pairs if t == T.CLEAN_TOPICS["log"]] == ["INFO fine"]
    assert "Traceback" not in worker.log_path.read_text(errors="replace")


async def test_every_contract_rule_dead_letters_and_the_next_good_record_is_scored(
        backend: Backend, worker: Any) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    bad = bad_metrics(tenant)
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    sent: dict[tuple[int, int], str] = {}  # (partition, offset) -> expected reason
    try:
        for reason, rec in bad:  # each alone in its message, as a producer would send it
            meta = await producer.send_and_wait(T.RAW_TOPICS["metric"], orjson.dumps(rec), key=tenant.encode())
            sent[(meta.partition, meta.offset)] = reason
        for raw, reason in ((b'{"metric_name":"Latency","value":NaN}', "not valid JSON"),
                            (b'{"metric_name":"Latency","value":1e400,"timestamp":1,"tenant_id":"t"}', "not valid JSON"),
                            (b"\xff\xfe not json", "not valid JSON"), (b'{"records": 5}', "envelope field")):
            meta = await producer.send_and_wait(T.RAW_TOPICS["metric"], raw, key=tenant.encode())
            sent[(meta.partition, meta.offset)] = reason
        # Hand-made records on the clean topic must not stop scoring either.
        for raw in (orjson.dumps({"records": [{"series": "x", "component": "y", "value": None}]}), b"[1, 2",
                    orjson.dumps({"records": [{"series": "x", "component": "y", "value": 1.0, "timestamp": "?"}]})):
            await producer.send_and_wait(T.CLEAN_TOPICS["metric"], raw, key=b"x")
        good = [_metric(tenant, i) for i in range(30)]
        meta = await producer.send_and_wait(T.RAW_TOPICS["metric"], orjson.dumps({"records": good}),
                                            key=tenant.encode())
    finally:
        await producer.stop()

    series_prefix = f"{tenant}|Test/Hostile|Latency|"

    def keep(topic: str, rec: dict[str, Any]) -> bool:
        if topic == T.DEADLETTER:
            return (rec.get("partition"), rec.get("offset")) in sent and rec.get("source_topic") == T.RAW_TOPICS["metric"]
        if topic == T.SERIES:
            return str(rec.get("series", "")).startswith(series_prefix)
        return rec.get("tenant_id") == tenant

    def done(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
        scored = [r for t, r in pairs if t == T.SERIES]
        return (sum(t == T.DEADLETTER for t, _ in pairs) >= len(sent) and sum(t == T.CLEAN_TOPICS["metric"]
                for t, _ in pairs) >= len(good) and bool(scored))

    pairs = await collect(backend.kafka_bootstrap, [T.DEADLETTER, T.CLEAN_TOPICS["metric"], T.SERIES], done,
                          keep=keep, timeout=45, settle=1.0)
    dead = [r for t, r in pairs if t == T.DEADLETTER]
    got = {(d["partition"], d["offset"]): d["reason"] for d in dead}
    missing = {k: v for k, v in sent.items() if k not in got}
    assert not missing, f"bad records that ended nowhere: {missing}"
    wrong = {k: (sent[k], got[k]) for k in sent if not got[k].startswith(sent[k])}
    assert not wrong, f"dead-lettered with another reason: {wrong}"
    assert len(dead) == len(sent), "a bad record was dead-lettered twice"
    assert all(len(orjson.dumps(d)) < 1_000_000 for d in dead)
    clean = [r for t, r in pairs if t == T.CLEAN_TOPICS["metric"]]
    assert sorted(r["event_id"] for r in clean) == sorted(g["event_id"] for g in good), "records in != records out"
    assert any(t == T.SERIES for t, _ in pairs), "the good records after the bad ones were not scored"
    # Hand-made clean-topic records were dead-lettered by scoring, not crashed on.
    scoring_dead = await collect(backend.kafka_bootstrap, [T.DEADLETTER], lambda p: len(p) >= 3,
                                 keep=lambda _t, r: r.get("source_topic") == T.CLEAN_TOPICS["metric"], timeout=20)
    assert len(scoring_dead) >= 3, f"clean-topic records not dead-lettered: {scoring_dead}"
    assert worker.alive(), "the worker died"
    log_text = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log_text and "crashed" not in log_text.lower(), "an agent crashed (see the worker log)"
