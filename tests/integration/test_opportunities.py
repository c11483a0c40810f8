"""Opportunities and triggers through the real broker: metric + log evidence → one opportunity; trigger history."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.opportunities.logic.opportunities import opportunity_id
from streams import topics as T
from streams.records import LogEvent, MetricDataPoint
from tests.conftest import Backend
from tests.kafka_utils import collect, envelope, produce, start_kaizen


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    """Workers of this module start new consumer groups that read topics from the beginning: a broker of
    the module's own keeps other modules' records out of them (see tests/conftest.py)."""
    return own_backend

COMPONENT = "orders"
STEP = 60


def _latency(tenant: str, n_steady: int, n_high: int, end: float) -> list[dict[str, Any]]:
    """Steady noisy latency of service=orders, then a sustained shift to about double."""
    rnd = random.Random(3)
    n = n_steady + n_high
    start = end - (n - 1) * STEP
    return [{"metric_name": "Latency", "value": round((100.0 if i < n_steady else 210.0) + rnd.gauss(0, 3), 3),
             "unit": "Milliseconds", "timestamp": start + i * STEP, "tenant_id": tenant, "namespace": "Test/Opp",
             "dimensions": {"service": COMPONENT}} for i in range(n)]


def _timeouts(tenant: str, n: int, start: float) -> list[dict[str, Any]]:
    return [{"log_group": f"/aws/lambda/{COMPONENT}", "severity": "ERROR", "tenant_id": tenant,
             "timestamp": start + i * 120,
             "message": f"Task timed out after {3.0 + i * 0.37:.2f} seconds calling pricing-{i}.prod.local:"
                        f"{9000 + i} request_id={uuid.uuid4()}"} for i in range(n)]


def test_metric_and_log_components_match() -> None:
    """Premise of the join: the metric dimension service=X and the log group /aws/lambda/X name one component."""
    m = MetricDataPoint.model_validate(_latency("t", 1, 0, 1_700_000_000.0)[0])
    lg = LogEvent.model_validate(_timeouts("t", 1, 1_700_000_000.0)[0])
    assert m.component() == lg.component() == COMPONENT


async def test_latency_anomaly_and_recurring_timeout_make_one_opportunity(backend: Backend, tmp_path: Path) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "kaizen-data"
    env = {**backend.env(), "KAIZEN_APP_ID": f"kz-opp-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "4",
           "KAIZEN_DATA_DIR": str(data_dir)}
    mine = lambda _t, r: r.get("tenant_id") == tenant  # noqa: E731
    oid = opportunity_id(tenant, COMPONENT, "latency")
    now = time.time()
    hour = float(int(now) // 3600 * 3600 - 3600)
    w = start_kaizen(["worker"], env, "opportunities-worker")
    try:
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(_latency(tenant, 300, 20, now))],
                      key=tenant.encode())
        # Task durations: the last ones take ≥ 60 s, so the slow_tasks trigger fires.
        durations = [{"metric_name": "Duration", "value": v, "unit": "Milliseconds", "timestamp": now - (5 - i) * STEP,
                      "tenant_id": tenant, "namespace": "AWS/Lambda", "dimensions": {"FunctionName": COMPONENT}}
                     for i, v in enumerate([1200.0, 1300.0, 1250.0, 75_000.0, 82_000.0])]
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(durations)], key=tenant.encode())
        # The metric evidence first, then the log evidence: the recurring pattern (12 timeouts in the hour)
        # is the most frequent evidence, so the opportunity's frequency and score peak at its last version.
        got = await collect(backend.kafka_bootstrap, [T.INSIGHTS],
                            lambda p: any(r["insight_type"] == "anomaly" for _, r in p), keep=mine, timeout=40)
        assert any(r["insight_type"] == "anomaly" for _, r in got), "the sustained latency shift raised no anomaly"
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["log"],
                      [envelope([ln]) for ln in _timeouts(tenant, 12, hour + 30)], key=tenant.encode())

        def done(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
            opps = [r for t, r in pairs if t == T.OPPORTUNITIES and r.get("opportunity_id") == oid]
            sources = {e["source"] for e in opps[-1]["telemetry_evidence"]} if opps else set()
            kinds = {r.get("kind") for t, r in pairs if t == T.HEALING}
            return "patterns" in sources and bool(sources & {"scoring", "trends"}) and {"trigger", "action"} <= kinds

        pairs = await collect(backend.kafka_bootstrap, [T.OPPORTUNITIES, T.INSIGHTS, T.HEALING], done, keep=mine,
                              timeout=50, settle=2.0)
        insights = [r for t, r in pairs if t == T.INSIGHTS]
        opps = [r for t, r in pairs if t == T.OPPORTUNITIES]
        assert {r["opportunity_id"] for r in opps} == {oid}, \
            f"expected one opportunity, got {sorted({(r['problem_type'], r['opportunity_id']) for r in opps})}; " \
            f"insights: {sorted({(r['source'], r['problem_type'], r['affected_component']) for r in insights})}"
        assert any(r["insight_type"] == "anomaly" and r["source"] == "scoring" for r in insights), \
            "the sustained latency shift raised no anomaly insight"
        assert any(r["evidence"].get("reason") == "recurring" for r in insights if r["source"] == "patterns")
        last = opps[-1]
        sources = {e["source"] for e in last["telemetry_evidence"]}
        assert "patterns" in sources and sources & {"scoring", "trends"}, f"evidence sources: {sources}"
        assert last["problem_type"] == "latency" and last["affected_components"][0] == COMPONENT
        assert last["occurrences"] == len(opps) and last["status"] == "open"
        # Impact rises with frequency: later versions recur more often and score higher than the first.
        freqs = [r["frequency_per_day"] for r in opps]
        scores = [r["impact_score"] for r in opps]
        assert freqs[-1] > freqs[0], f"frequency did not rise: {freqs}"
        assert scores[-1] > scores[0], f"impact score did not rise with frequency: {scores}"
        print("frequency_per_day", freqs, "impact_score", scores)
        assert freqs[-1] == max(freqs), f"the latest version is not the most frequent: {freqs}"

        healing = [r for t, r in pairs if t == T.HEALING]
        fired = [r for r in healing if r["kind"] == "trigger" and r["name"] == "slow_tasks"]
        assert len(fired) == 1, f"slow_tasks should fire once (cooldown): {healing}"
        assert fired[0]["component"] == COMPONENT and fired[0]["detail"]["value"] >= 60.0
        acts = [r for r in healing if r["kind"] == "action"]
        assert "analyze_slow_tasks" in {a["name"] for a in acts}
    finally:
        w.stop()

    # `kaizen healing history --json` reads the group's history topic, whatever the local data directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-m", "kaizen.cli", "healing", "history", "--json", "--limit", "1000"],
                         capture_output=True, cwd=elsewhere, timeout=60, check=True,
                         env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": backend.kafka_bootstrap,
                              "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    listed = orjson.loads(out.stdout)
    assert {(r["kind"], r["name"], r["tenant_id"]) for r in listed} >= {
        ("trigger", "slow_tasks", tenant), ("action", "analyze_slow_tasks", tenant)}
