"""Pattern burst: one tenant sends 1,500 log lines of 1,500 distinct templates through Tansu and one worker.

The tenant's live patterns stay at its cap (PATTERN_MAX_TEMPLATES_PER_TENANT, its share per partition); every
line beyond it is on telemetry.deadletter with reason "pattern cap", to the last line, each once; its known
patterns are still counted; another tenant's patterns, sent in the middle of the burst, are all counted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen

LINES = 1_500
CAP, PARTITIONS = 40, 4
SHARE = CAP // PARTITIONS  # one tenant and one log group: every line lands on one partition
GROUP = "/aws/lambda/burst"


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """A broker of this module's own: the test counts whole topics."""
    return own_backend


@pytest.fixture
def worker(backend: Backend) -> Iterator[Any]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-pburst-{uuid.uuid4().hex[:6]}",
           "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS), "PATTERN_MAX_TEMPLATES_PER_TENANT": str(CAP),
           "KAIZEN_DATA_DIR": f"/tmp/kz-pburst-{uuid.uuid4().hex[:6]}"}
    proc = start_kaizen(["worker"], env, "faults-pattern-burst-worker")
    try:
        yield proc
    finally:
        proc.stop()


def word(i: int) -> str:
    """A token of letters only (a digit would make it a variable): distinct per i."""
    return "".join(chr(ord("g") + int(d)) for d in str(i))


def distinct_line(tenant: str, i: int, ts: float) -> dict[str, Any]:
    w = word(i)
    return {"log_group": GROUP, "message": f"ERROR {w}a {w}b {w}c {w}d", "timestamp": ts, "tenant_id": tenant,
            "severity": "ERROR"}


def _records(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [rec for _, r in pairs for rec in orjson.loads(r["original"])["records"]]


async def test_pattern_burst_is_capped_and_accounted_for_to_the_last_line(backend: Backend, worker: Any) -> None:
    tenant, other = f"pb-{uuid.uuid4().hex[:8]}", f"pq-{uuid.uuid4().hex[:8]}"
    now = time.time() - 120
    burst = [distinct_line(tenant, i, now + i * 0.001) for i in range(LINES)]
    others = [{"log_group": GROUP, "message": f"ERROR {kind} failed after {10 + v} ms", "timestamp": now + v,
               "tenant_id": other, "severity": "ERROR"}
              for kind in ("payment", "shipping", "inventory", "billing", "search") for v in range(4)]
    started = time.monotonic()
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"],
                  [envelope(burst[i:i + 100]) for i in range(0, LINES // 2, 100)], key=tenant.encode())
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope(others)], key=other.encode())
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"],
                  [envelope(burst[i:i + 100]) for i in range(LINES // 2, LINES, 100)], key=tenant.encode())
    # afterwards, the first template again (later timestamps: new lines): a known pattern, still counted
    again = [{**burst[0], "timestamp": now + 10 + k} for k in range(3)]
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope(again)], key=tenant.encode())

    def capped(topic: str, rec: dict[str, Any]) -> bool:
        return str(rec.get("reason", "")).startswith("pattern cap") and (tenant in rec["reason"] or other in
                                                                         rec["reason"])

    dead = await collect(backend.kafka_bootstrap, [T.DEADLETTER], lambda p: len(_records(p)) >= LINES - SHARE,
                         keep=capped, timeout=180, settle=2.0)
    accounted_in = time.monotonic() - started
    lines = _records(dead)
    assert all(r["tenant_id"] == tenant for r in lines), "the other tenant's lines were capped"
    assert all(f"({CAP}, {SHARE} in this partition)" in r["reason"] for _, r in dead), dead[0][1]["reason"]
    assert not any(r["original_truncated"] for _, r in dead)
    messages = [r["message"] for r in lines]
    assert len(set(messages)) == LINES - SHARE, f"{len(set(messages))} distinct lines dead-lettered"
    again_dl = len(messages) - len(set(messages))  # at least once: a redelivered batch is dead-lettered again
    assert set(messages) == {r["message"] for r in burst[SHARE:]}, "not the lines beyond the cap"

    def done(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
        latest = {r["key"]: r for _, r in pairs}
        mine = [r for r in latest.values() if r["tenant_id"] == tenant]
        theirs = [r for r in latest.values() if r["tenant_id"] == other]
        return any(r["total"] >= 4 for r in mine) and sum(r["total"] for r in theirs) >= len(others)

    pats = await collect(backend.kafka_bootstrap, [T.PATTERNS], done, timeout=60, settle=3.0,
                         keep=lambda _t, r: r.get("tenant_id") in (tenant, other))
    latest = {r["key"]: r for _, r in pats}
    mine = [r for r in latest.values() if r["tenant_id"] == tenant]
    theirs = [r for r in latest.values() if r["tenant_id"] == other]
    assert len(mine) == SHARE, f"{len(mine)} live patterns of the burst tenant, cap share {SHARE}"
    assert {r["sample"] for r in mine} == {r["message"] for r in burst[:SHARE]}
    assert max(r["total"] for r in mine) == 4, "the known pattern's later lines were not counted"
    assert len(theirs) == 5 and all(r["total"] == 4 for r in theirs), [(r["template"], r["total"]) for r in theirs]
    print(f"pattern burst of {LINES} templates: {len(mine)} live patterns (cap share {SHARE}), "
          f"{len(set(messages))} lines dead-lettered 'pattern cap' ({again_dl} again after a redelivery), "
          f"accounted for after {accounted_in:.1f} s; other tenant 5 patterns, {len(others)} lines counted")
    assert worker.alive() and "Traceback" not in worker.log_path.read_text(errors="replace")
