"""Shared fixtures: one real broker and one AWS endpoint for the whole integration session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kaizen.embedded import MOTO_CREDENTIALS, EmbeddedStack, start_moto, start_tansu

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# The daily scheduled improvement cycle (IMPROVEMENT_CYCLE_START_TIME, 02:00 UTC by default) starts in any
# worker that runs within five minutes after it: a suite run at 02:00 UTC once got one more cycle in one of
# the two runs test_equivalence compares. Every worker the suite starts inherits a start time twelve hours
# from now instead (a test of the schedule itself passes its own).
os.environ.setdefault("IMPROVEMENT_CYCLE_START_TIME", (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M"))


@dataclass(frozen=True)
class Backend:
    """Where the integration tests send Kafka and AWS traffic."""

    kafka_bootstrap: str
    aws_endpoint: str
    kind: str  # "embedded" or "testcontainers"

    def aws_env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.aws_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1", **MOTO_CREDENTIALS}

    def env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap, **self.aws_env()}


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    """Tansu + moto on free ports (default), or testcontainers' Kafka + LocalStack when
    KAIZEN_TEST_BACKEND=testcontainers and a Docker engine answers."""
    want = os.environ.get("KAIZEN_TEST_BACKEND", "embedded")
    if want == "testcontainers":
        if not _docker_available():
            pytest.fail("KAIZEN_TEST_BACKEND=testcontainers but no Docker engine answers")
        from testcontainers.kafka import KafkaContainer
        from testcontainers.localstack import LocalStackContainer

        with KafkaContainer().with_kraft() as kafka, LocalStackContainer() as localstack:
            yield Backend(kafka.get_bootstrap_server(), localstack.get_url(), "testcontainers")
        return
    log_dir = ARTIFACTS / "logs"
    stack = EmbeddedStack()
    try:
        stack.processes.append(start_tansu(0, log_dir))
        stack.processes.append(start_moto(0, log_dir))
        broker, moto = stack.processes
        yield Backend(f"127.0.0.1:{broker.port}", f"http://127.0.0.1:{moto.port}", "embedded")
    finally:
        stack.stop()


@pytest.fixture
def aws_env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The AWS SDK environment pointed at the test endpoint for the duration of one test."""
    for k, v in backend.env().items():
        monkeypatch.setenv(k, v)
    return backend


@pytest.fixture(scope="module")
def own_backend() -> Iterator[Backend]:
    """A broker and AWS endpoint of one test module's own, for tests that assert on whole topics
    (a read model's decode-error count, a topic's full contents) and must not see other tests' records."""
    stack = EmbeddedStack()
    try:
        stack.processes.append(start_tansu(0, ARTIFACTS / "logs"))
        stack.processes.append(start_moto(0, ARTIFACTS / "logs"))
        broker, moto = stack.processes
        yield Backend(f"127.0.0.1:{broker.port}", f"http://127.0.0.1:{moto.port}", "embedded")
    finally:
        stack.stop()
