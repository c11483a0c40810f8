"""Actuators against real endpoints: moto's SSM, the Tansu broker's config topic, a temp git repo."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.actuators.base import (
    AppliedChange,
    FingerprintMismatch,
    encode_value,
    logical_key,
    target_key,
)
from connectors.actuators.fingerprint import fingerprint
from connectors.actuators.git import GitActuator
from connectors.actuators.kafka_config import KafkaConfigActuator
from connectors.actuators.ssm import SSMActuator
from streams.state import ensure_topic
from streams.topics import CONFIG, TOPICS
from tests.conftest import Backend


def test_key_scheme() -> None:
    assert logical_key("acme", "checkout", "cache_size") == "acme/checkout/cache_size"
    assert target_key("acme/checkout/cache_size", "canary") == "acme/checkout/canary/cache_size"
    assert target_key("svc/cache.py", None) == "svc/cache.py"
    assert (encode_value(2048.0), encode_value(True), encode_value(0.25)) == ("2048", "true", "0.25")
    ch = AppliedChange("k", None, "v", fingerprint("v"), "imp", version="1")
    assert AppliedChange.from_dict(ch.as_dict()) == ch


# ---------------------------------------------------------------- SSM (moto server)


def _tenant() -> str:
    return "t" + uuid.uuid4().hex[:8]


async def test_ssm_apply_idempotent_and_rollback(aws_env: Backend) -> None:
    client = boto3.client("ssm")
    act = SSMActuator(client)
    key = logical_key(_tenant(), "checkout", "cache_size")
    client.put_parameter(Name=f"/kaizen/{key}", Value="1024", Type="String")

    a = await act.apply(key, "2048", "imp-1")
    assert (a.key, a.previous, a.new, a.noop) == (f"/kaizen/{key}", "1024", "2048", False)
    assert await act.read(a.key) == "2048" and a.fingerprint == fingerprint("2048")
    again = await act.apply(key, "2048", "imp-1")  # re-run after a crash: a no-op
    assert again.noop and again.previous == "1024"
    assert len(await act.history(a.key)) == 2  # the original + one apply, not two

    await act.rollback(a)
    assert await act.read(a.key) == "1024"
    await act.rollback(a)  # idempotent
    assert await act.read(a.key) == "1024" and len(await act.history(a.key)) == 3


async def test_ssm_rollback_of_new_parameter_deletes_it_and_canary_key(aws_env: Backend) -> None:
    act = SSMActuator(boto3.client("ssm"))
    key = logical_key(_tenant(), "api", "timeout_ms")
    canary = await act.apply(key, "7500", "imp-2", target="canary")
    assert canary.key.endswith("/api/canary/timeout_ms") and canary.previous is None
    assert await act.read(f"/kaizen/{key}") is None  # the full rollout is untouched
    await act.rollback(canary)
    assert await act.read(canary.key) is None


async def test_ssm_fingerprint_mismatch_refuses_rollback(aws_env: Backend) -> None:
    client = boto3.client("ssm")
    act = SSMActuator(client)
    key = logical_key(_tenant(), "api", "pool_size")
    a = await act.apply(key, "15", "imp-3")
    client.put_parameter(Name=a.key, Value="99", Type="String", Overwrite=True)  # someone else's change
    with pytest.raises(FingerprintMismatch):
        await act.rollback(a)
    assert await act.read(a.key) == "99"


# ---------------------------------------------------------------- Kafka config topic (Tansu)


@pytest.fixture
async def kafka_clients(backend: Backend) -> AsyncIterator[tuple[AIOKafkaProducer, str]]:
    spec = next(t for t in TOPICS if t.name == CONFIG)
    await ensure_topic(backend.kafka_bootstrap, CONFIG, 2, dict(spec.config))
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka_bootstrap, acks=1)
    await producer.start()
    try:
        yield producer, backend.kafka_bootstrap
    finally:
        await producer.stop()


async def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    return consumer


async def test_kafka_config_apply_read_rollback_and_rebuild(kafka_clients: tuple[AIOKafkaProducer, str]) -> None:
    producer, bootstrap = kafka_clients
    consumer = await _consumer(bootstrap)
    try:
        act = KafkaConfigActuator(producer, consumer)
        key = logical_key(_tenant(), "checkout", "cache_ttl_seconds")
        assert await act.read(key) is None
        a = await act.apply(key, "120", "imp-1")
        assert a.previous is None and await act.read(key) == "120"
        b = await act.apply(key, "240", "imp-2")
        assert b.previous == "120"
        assert (await act.apply(key, "240", "imp-2")).noop
        canary = await act.apply(key, "480", "imp-3", target="canary")
        assert canary.key.endswith("/checkout/canary/cache_ttl_seconds") and await act.read(key) == "240"
    finally:
        await consumer.stop()

    # a restarted worker rebuilds the view by reading the topic until polls come back empty
    consumer2 = await _consumer(bootstrap)
    try:
        act2 = KafkaConfigActuator(producer, consumer2)
        assert await act2.read(key) == "240" and act2.state[key]["previous"] == "120"
        assert (await act2.apply(key, "240", "imp-2")).noop  # idempotent across the restart
        await act2.rollback(b)
        assert await act2.read(key) == "120"
        await act2.rollback(b)  # idempotent
        assert await act2.read(key) == "120"
        with pytest.raises(FingerprintMismatch):  # the key holds 120, not the 999 this change claims
            await act2.rollback(AppliedChange(key, "1", "999", fingerprint("999"), "imp-9"))
    finally:
        await consumer2.stop()


# ---------------------------------------------------------------- git working tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cache.py").write_text("SIZE = 1024\n")
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "-C", str(tmp_path), *env, "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), *env, "commit", "-qm", "init"], check=True)
    return tmp_path


def _log(repo: Path) -> list[str]:
    return subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


async def test_git_apply_commit_idempotent_and_revert(repo: Path) -> None:
    act = GitActuator(repo)
    a = await act.apply("svc/cache.py", "SIZE = 2048\n", "imp-1")
    assert a.previous == "SIZE = 1024\n" and a.version and not a.noop
    assert (repo / "svc" / "cache.py").read_text() == "SIZE = 2048\n"
    again = await act.apply("svc/cache.py", "SIZE = 2048\n", "imp-1")
    assert again.noop and again.version == a.version and again.previous == "SIZE = 1024\n"
    assert len(_log(repo)) == 2
    await act.rollback(a)
    assert (repo / "svc" / "cache.py").read_text() == "SIZE = 1024\n"
    assert _log(repo)[0].startswith("Revert") and len(_log(repo)) == 3
    await act.rollback(a)  # idempotent
    assert len(_log(repo)) == 3


async def test_git_new_file_canary_and_mismatch(repo: Path) -> None:
    act = GitActuator(repo)
    c = await act.apply("svc/cache.py", "SIZE = 4096\n", "imp-2", target="canary")
    assert c.key == "svc/canary/cache.py" and c.previous is None
    assert (repo / "svc" / "cache.py").read_text() == "SIZE = 1024\n"
    (repo / "svc" / "canary" / "cache.py").write_text("SIZE = 1\n")  # edited by someone else
    with pytest.raises(FingerprintMismatch):
        await act.rollback(c)
    (repo / "svc" / "canary" / "cache.py").write_text("SIZE = 4096\n")
    await act.rollback(c)
    assert not (repo / "svc" / "canary" / "cache.py").exists()
    with pytest.raises(ValueError):
        await act.read("../etc/passwd")
