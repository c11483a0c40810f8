"""Error patterns through the real broker: variants of one error → one pattern, one recurring insight."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from streams import topics as T
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

LOG_GROUP = "/aws/lambda/inventory-sync"


def _timeout_line(tenant: str, i: int, ts: float) -> dict[str, Any]:
    """One variant of the same timeout: host, port, duration and request id all differ."""
    msg = (f"Task timed out after {3.0 + i * 0.41:.2f} seconds calling inventory-{i}.prod.local:{8000 + i * 7} "
           f"request_id={uuid.uuid4()}")
    return {"log_group": LOG_GROUP, "log_stream": f"2026/01/01/[$LATEST]{i:04x}", "message": msg, "timestamp": ts,
            "tenant_id": tenant, "severity": "ERROR"}


@pytest.fixture(scope="module")
def worker(backend: Backend) -> Iterator[None]:
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-patterns-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_DATA_DIR": f"/tmp/kz-patterns-{uuid.uuid4().hex[:6]}"}
    proc = start_kaizen(["worker"], env, "patterns-worker")
    try:
        yield
    finally:
        proc.stop()


def _hour_start() -> float:
    """The start of the previous full hour: every line of the test falls in one tumbling window."""
    return float(int(time.time()) // 3600 * 3600 - 3600)


def _recurring(pairs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for t, r in pairs if t == T.INSIGHTS and r.get("insight_type") == "error_pattern"
            and r["evidence"].get("reason") == "recurring"]


async def test_variants_of_one_timeout_make_one_pattern_and_one_recurring_insight(backend: Backend,
                                                                                 worker: None) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    start = _hour_start()
    lines = [_timeout_line(tenant, i, start + 60 + i * 240) for i in range(11)]  # 11 within 41 minutes
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope([ln]) for ln in lines], key=tenant.encode())
    pairs = await collect(backend.kafka_bootstrap, [T.INSIGHTS, T.PATTERNS], lambda p: bool(_recurring(p)),
                          keep=mine, timeout=45, settle=1.5)
    rec = _recurring(pairs)
    assert len(rec) == 1, f"expected exactly one recurring insight, got {len(rec)}"
    ins = rec[0]
    assert ins["source"] == "patterns" and ins["affected_component"] == "inventory-sync"
    assert ins["evidence"]["category"] == "timeout" and ins["evidence"]["count_window"] == 11
    assert ins["metrics"]["count_window"] == 11.0 and ins["evidence"]["log_group"] == LOG_GROUP
    pid = ins["evidence"]["pattern_id"]
    patterns = [r for t, r in pairs if t == T.PATTERNS]
    assert {r["pattern_id"] for r in patterns} == {pid}, "the 11 variants were split into several patterns"
    assert max(r["count_window"] for r in patterns) == 11 and max(r["total"] for r in patterns) == 11
    assert "<NUM>" in ins["evidence"]["template"] or "<*>" in ins["evidence"]["template"]
    news = [r for t, r in pairs if t == T.INSIGHTS and r["evidence"].get("reason") == "new"]
    assert len(news) == 1 and news[0]["evidence"]["pattern_id"] == pid, "a new error pattern is reported once"

    # Three more in the same window: still exactly one recurring insight for this window.
    more = [_timeout_line(tenant, 20 + i, start + 3000 + i * 60) for i in range(3)]
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope(more)], key=tenant.encode())
    pairs = await collect(backend.kafka_bootstrap, [T.INSIGHTS, T.PATTERNS],
                          lambda p: any(t == T.PATTERNS and r["total"] >= 14 for t, r in p), keep=mine,
                          timeout=90, settle=1.5)
    assert any(t == T.PATTERNS and r["total"] == 14 for t, r in pairs), "the 3 extra lines were not counted"
    assert len(_recurring(pairs)) == 1, "a recurring pattern must be reported once per window"

    # A different error in the same log group is a different pattern (a new one, not recurring).
    other = {"log_group": LOG_GROUP, "message": "ValueError: invalid literal for int() with base 10: 'abc'",
             "timestamp": start + 3300, "tenant_id": tenant, "severity": "ERROR"}
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope([other])], key=tenant.encode())
    pairs = await collect(backend.kafka_bootstrap, [T.INSIGHTS, T.PATTERNS],
                          lambda p: len({r["pattern_id"] for t, r in p if t == T.PATTERNS}) >= 2, keep=mine,
                          timeout=90, settle=1.0)
    pids = {r["pattern_id"] for t, r in pairs if t == T.PATTERNS}
    assert len(pids) == 2 and pid in pids, f"the different error did not get its own pattern: {pids}"
    new_ones = [r for t, r in pairs if t == T.INSIGHTS and r["evidence"].get("reason") == "new"]
    assert {r["evidence"]["pattern_id"] for r in new_ones} == pids
    other_new = next(r for r in new_ones if r["evidence"]["pattern_id"] != pid)
    assert other_new["evidence"]["category"] == "exception"
    assert len(_recurring(pairs)) == 1


async def test_info_lines_make_a_pattern_but_no_insight(backend: Backend, worker: None) -> None:
    """Non-error lines are counted as patterns but raise neither new nor recurring insights."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    start = _hour_start()
    lines = [{"log_group": LOG_GROUP, "message": f"processed batch {i} of {100 + i} items in {i * 3} ms",
              "timestamp": start + i * 60, "tenant_id": tenant, "severity": "INFO"} for i in range(15)]
    await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"], [envelope(lines)], key=tenant.encode())
    pairs = await collect(backend.kafka_bootstrap, [T.INSIGHTS, T.PATTERNS],
                          lambda p: any(t == T.PATTERNS and r["total"] >= 15 for t, r in p), keep=mine,
                          timeout=90, settle=1.5)
    assert any(t == T.PATTERNS and r["total"] == 15 for t, r in pairs), "the info lines were not counted"
    assert not [r for t, r in pairs if t == T.INSIGHTS], "info lines raised insights"
