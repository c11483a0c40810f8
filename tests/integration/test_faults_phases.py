"""A worker SIGKILLed while an improvement is in each phase; a new worker of the group finishes it.

Phases (agents/improvement/logic/lifecycle.py): generating, validating, deploying, monitoring, rolling_back.
The worker reaches moto's SSM through a TCP gate in this process (`StallGate`) that can hold requests
unanswered — as an AWS call that hangs — so the kill lands while the worker is *inside* the phase:

- generating: every AWS request held; the kill comes while the planner reads the current parameters.
- validating: the phase makes no outside call and takes milliseconds, so the kill comes as soon as its
  event is seen (writes held, so the worker cannot get past the first write of deploying): the worker dies
  in validating or at the very start of deploying, nothing applied.
- deploying: writes held after the first change is applied (its marker and its value): a partial canary.
- monitoring: the canary live, its verdict not yet reached.
- rolling_back: a degrading change; writes held once the verdict came: the undo is in flight.

Then the gate cuts what it held and lets everything through, and a second worker takes over. Each case
asserts: exactly one verdict; one canary deployment; SSM's real state matches the verdict (kept: the plan's
values, no canary key; otherwise every value back as before); the applied-changes journal has nothing
outstanding for the improvement; the audit file has one deployment and one verdict record for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.improvement.journal import FILE_NAME, AppliedJournal
from tests.conftest import Backend
from tests.integration.test_cycle import _events, _get, _has, _ssm, _terminal
from tests.integration.test_rollback_durable import (
    AwsGate,
    _assert_back_to_previous,
    _env,
    _seed,
    _start_improvement,
    service_factory,
)
from tests.kafka_utils import start_kaizen

__all__ = ["service_factory"]  # the fixture, reused from the rollback tests
VERDICTS = ("completed", "rolled_back", "failed")
# One consumer group for the module, as one long-lived cluster: each case's workers go on from the offsets the
# previous case's committed (a new group per case replayed every earlier case's telemetry from the beginning,
# and on a loaded machine that delayed the live metrics past the baseline window: "no baseline telemetry").
APP_ID = f"kz-phases-{uuid.uuid4().hex[:6]}"
WRITES = (b"AmazonSSM.PutParameter", b"AmazonSSM.DeleteParameter")


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """One broker and moto for the module (each case its own consumer group and tenant)."""
    return own_backend


class StallGate(AwsGate):
    """An AwsGate that can hold requests unanswered: all of them, or every write after the first N."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.stall_all = False
        self.stall_writes_after: int | None = None
        self.writes = 0
        self.held = 0
        self.cut = asyncio.Event()

    def _holds(self, data: bytes) -> bool:
        if not data.startswith((b"POST ", b"GET ")):
            return False  # the rest of a request already let through
        if self.stall_all:
            return True
        return self.stall_writes_after is not None and self.writes >= self.stall_writes_after and any(
            w in data for w in WRITES)

    def release(self) -> None:
        """Cut every held request (its sender is dead) and let everything through from now on."""
        self.stall_all, self.stall_writes_after = False, None
        self.cut.set()
        for w in list(self.conns):
            w.close()
        self.conns.clear()
        self.cut = asyncio.Event()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            return
        self.conns.update({writer, up_w})
        cut = self.cut

        async def to_aws() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    if self._holds(data):
                        self.held += 1
                        await cut.wait()  # never forwarded
                        break
                    up_w.write(data)
                    await up_w.drain()
                    self.writes += sum(data.count(w) for w in WRITES)
            up_w.close()

        async def from_aws() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await up_r.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(to_aws(), from_aws(), return_exceptions=True)
        self.conns.difference_update({writer, up_w})


@pytest.fixture
async def gate(backend: Backend) -> AsyncIterator[StallGate]:
    g = StallGate(backend.aws_endpoint)
    await g.open()
    try:
        yield g
    finally:
        g.release()
        await g.close()


async def _until(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.2)
    return bool(pred())


def _audit(path: Path, imp: str) -> list[str]:
    if not path.exists():
        return []
    return [r["action"] for r in map(orjson.loads, path.read_bytes().splitlines()) if r.get("target") == imp]


def _canary_keys(ssm: Any, tenant: str) -> dict[str, str]:
    out = {}
    for name in ("cache_size", "cache_ttl_seconds", "pool_size", "concurrency"):
        v = _get(ssm, f"/kaizen/{tenant}/api/canary/{name}")
        if v is not None:
            out[name] = v
    return out


@pytest.mark.parametrize("phase", ["generating", "validating", "deploying", "monitoring", "rolling_back"])
async def test_worker_sigkilled_in_each_phase_one_verdict_nothing_left_applied(
        phase: str, backend: Backend, gate: StallGate, tmp_path: Path, service_factory: Any) -> None:
    started = time.monotonic()
    ssm = _ssm(backend)
    tenant = f"ph{phase[:3]}-{uuid.uuid4().hex[:6]}"
    _seed(ssm, tenant)
    env = _env(backend, gate, tmp_path, MONITORING_DURATION_SECONDS="12", KAIZEN_COMMAND_MAX_AGE_SECONDS="120",
               KAIZEN_APP_ID=APP_ID)
    service_factory(tenant, "api", "bad" if phase == "rolling_back" else "good")
    if phase == "generating":
        gate.stall_all = True
    elif phase == "validating":
        gate.stall_writes_after = 0
    elif phase == "deploying":
        gate.stall_writes_after = 2  # the first change's marker and value pass, the rest is held
    w1 = start_kaizen(["worker"], env, f"phase-{phase}-w1")
    try:
        await _start_improvement(backend, tenant)
        if phase == "rolling_back":
            await _events(backend, tenant, _has("monitoring"), timeout=90)
            gate.stall_writes_after = gate.writes  # the undo's first write will be held
        evs = await _events(backend, tenant, _has(phase), timeout=90)
        assert any(e["status"] == phase for e in evs), [e["status"] for e in evs]
        if phase != "monitoring" and phase != "validating":
            assert await _until(lambda: gate.held >= 1, 60), f"the worker made no AWS call in {phase}"
        # the status the worker had reached when killed (the events it had written)
        at_kill = [e["status"] for e in await _events(backend, tenant, lambda e: True, timeout=1.0, settle=0.5)]
        os.kill(w1.pid, signal.SIGKILL)
        w1.proc.wait(10)
    finally:
        w1.stop()
    imp = str(evs[0]["improvement_id"])
    canary_at_kill = _canary_keys(ssm, tenant)
    journal = AppliedJournal(tmp_path / FILE_NAME)
    outstanding_at_kill = [c.key for c in journal.outstanding().get(imp, [])]
    if phase == "deploying":  # in flight: journalled, at most the first change applied
        assert outstanding_at_kill and len(canary_at_kill) <= 1, (canary_at_kill, outstanding_at_kill)
    if phase in ("generating", "validating"):
        assert not canary_at_kill, canary_at_kill
    gate.release()
    w2 = start_kaizen(["worker"], env, f"phase-{phase}-w2")
    try:
        evs = await _events(backend, tenant, _terminal, timeout=150, settle=2.0)
    finally:
        w2.stop()
    ids = {e["event_id"]: e for e in evs}
    verdicts = [e for e in ids.values() if e["status"] in VERDICTS]
    canary = [e for e in ids.values() if e["status"] == "monitoring"
              and e["data"].get("deployment", {}).get("stage") == "canary"]
    assert len(verdicts) == 1, [(e["status"], e["reason"]) for e in verdicts]
    assert len(canary) == 1, [(e["status"], e["data"].get("deployment")) for e in evs]
    verdict = verdicts[0]["status"]
    if phase == "rolling_back":
        assert verdict == "rolled_back", (verdict, verdicts[0]["reason"])
    plan = next(e["data"]["plan"] for e in evs if "plan" in e.get("data", {}))
    if verdict == "completed":
        for c in plan["changes"]:
            assert float(_get(ssm, f"/kaizen/{tenant}/api/{c['parameter']}") or "nan") == float(c["new"]), c
    else:
        _assert_back_to_previous(ssm, tenant)
    assert not _canary_keys(ssm, tenant), "a canary key left applied after the verdict"
    left = await asyncio.to_thread(lambda: journal.outstanding().get(imp, []))
    assert not left, f"changes left outstanding in the journal: {[c.key for c in left]}"
    audit = _audit(tmp_path / "audit.jsonl", imp)
    terminal = {"completed": "improvement_completed", "rolled_back": "rollback", "failed": "improvement_failed"}
    assert audit.count("deployment") == 1 and audit.count(terminal[verdict]) == 1, audit
    print(f"SIGKILL in {phase}: events before the kill {at_kill}, canary at kill {canary_at_kill}, journal "
          f"outstanding {len(outstanding_at_kill)}; verdict {verdict} ({verdicts[0]['reason'][:80]}); "
          f"{time.monotonic() - started:.1f} s")
