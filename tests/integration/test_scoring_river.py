"""Scoring through Tansu (+ moto): a River model chosen by KAIZEN_DETECTORS is used and checkpointed; a new
CloudWatch series' history is learnt without insights and its first anomalous live point is flagged."""

from __future__ import annotations

import base64
import pickle
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from agents.scoring.logic.models import RiverScorer
from connectors.cloudwatch.client import boto_config, make_clients
from connectors.cloudwatch.mapping import align_down
from connectors.cloudwatch.runner import ConnectorRunner
from connectors.publisher import TelemetryPublisher
from streams import topics as T
from streams.settings import Settings
from tests.conftest import Backend
from tests.integration.test_connectors_cloudwatch import _run_polls
from tests.kafka_utils import collect, envelope, produce, start_kaizen

GAUSSIAN = "river.anomaly.GaussianScorer(window_size=200)"


@pytest.fixture(scope="module")
def backend(own_backend: Any) -> Any:
    return own_backend


def _env(backend: Backend, app: str, **extra: str) -> dict[str, str]:
    return {**backend.env(), "KAIZEN_APP_ID": f"kz-{app}-{uuid.uuid4().hex[:6]}", "KAFKA_TOPIC_PARTITIONS": "2",
            "KAIZEN_DATA_DIR": f"/tmp/kz-{app}-{uuid.uuid4().hex[:6]}", **extra}


async def test_river_model_from_settings_is_used_live_and_checkpointed(backend: Backend) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    env = _env(backend, "river", KAIZEN_DETECTORS=f'{{"*": "kaizen", "Queue*": "{GAUSSIAN}"}}')
    rnd = random.Random(3)
    start = time.time() - 400 * 60
    pts = [{"metric_name": "QueueDepth", "value": round(50 + rnd.gauss(0, 2), 3), "unit": "Count",
            "timestamp": start + 60 * i, "tenant_id": tenant, "namespace": "Test/River",
            "dimensions": {"service": "jobs"}} for i in range(399)]
    pts.append({**pts[-1], "timestamp": start + 60 * 399, "value": 95.0})
    w = start_kaizen(["worker"], env, "scoring-river-worker")
    try:
        await produce(backend.kafka_bootstrap, T.RAW_TOPICS["metric"], [envelope(pts)], key=tenant.encode())
        store = f"{env['KAIZEN_APP_ID']}.state.detectors"

        def done(pairs: list[tuple[str, dict[str, Any]]]) -> bool:
            return any(t == T.INSIGHTS and r["metrics"].get("value") == 95.0 for t, r in pairs) \
                and any(t == store for t, _ in pairs)

        pairs = await collect(backend.kafka_bootstrap, [T.INSIGHTS, store], done, timeout=50,
                              keep=lambda t, r: t == store or r.get("tenant_id") == tenant)
    finally:
        w.stop()
    anomalies = [r for t, r in pairs if t == T.INSIGHTS and r["insight_type"] == "anomaly"]
    assert anomalies and all(r["evidence"]["detector"] == GAUSSIAN for r in anomalies)
    assert any(r["metrics"]["value"] == 95.0 for r in anomalies)
    checkpoints = [base64.b64decode(v) for t, r in pairs if t == store
                   for k, v in (r.get("set") or {}).items() if tenant in k]
    assert checkpoints, "the series was not checkpointed"
    det_len = int.from_bytes(checkpoints[-1][:4], "little")
    det = checkpoints[-1][8:8 + det_len]
    assert det[:1] == b"P"  # a pickled River model, not kaizen's compact state
    scorer = pickle.loads(det[1:])  # noqa: S301 - our own checkpoint
    assert isinstance(scorer, RiverScorer) and scorer.spec == GAUSSIAN
    assert type(scorer.model).__name__ == "GaussianScorer" and scorer.model.gaussian.n_samples > 0


@pytest.fixture
async def publisher(backend: Backend) -> AsyncIterator[TelemetryPublisher]:
    pub = TelemetryPublisher(backend.kafka_bootstrap, acks="all", linger_ms=5)
    await pub.start()
    try:
        yield pub
    finally:
        await pub.stop()


async def test_new_cloudwatch_series_history_is_learnt_and_first_anomaly_flagged(
        backend: Backend, tmp_path: Path, publisher: TelemetryPublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in backend.env().items():
        monkeypatch.setenv(k, v)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ns = f"Test/History{uuid.uuid4().hex[:6]}"
    period = 300
    settings = Settings(kafka_bootstrap_servers=backend.kafka_bootstrap, aws_endpoint_url=backend.aws_endpoint,
                        kaizen_data_dir=tmp_path / "data", cloudwatch_fallback_dir=tmp_path / "fallback",
                        cloudwatch_namespace=ns, cloudwatch_metrics_period=period,
                        cloudwatch_metrics_statistics=["Average"], cloudwatch_stream_interval_seconds=0.3)
    cw = boto3.client("cloudwatch", endpoint_url=backend.aws_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    base = align_down(datetime.now(UTC).timestamp(), period)
    n = 2 * 86400 // period                      # two days of 5-minute points, up to two windows ago
    rnd = random.Random(9)
    history = [(base - (n + 1 - i) * period, 100.0 + rnd.gauss(0.0, 3.0)) for i in range(n)]
    spike_at = n - 288                           # a day ago: anomalous, but history makes no insight
    history[spike_at] = (history[spike_at][0], 400.0)
    dims = [{"Name": "tenant_id", "Value": tenant}, {"Name": "service", "Value": "checkout"}]
    for i in range(0, n, 500):
        cw.put_metric_data(Namespace=ns, MetricData=[
            {"MetricName": "Latency", "Value": v, "Unit": "Milliseconds", "Dimensions": dims,
             "Timestamp": datetime.fromtimestamp(t + 10, UTC)} for t, v in history[i:i + 500]])
    w = start_kaizen(["worker"], _env(backend, "history"), "scoring-history-worker")
    try:
        clients = make_clients(settings, config=boto_config(max_attempts=1, connect_timeout=1, read_timeout=30))
        first = ConnectorRunner(settings, publisher, clients, sources=("metrics",))
        await _run_polls(first, 1, timeout=60)
        # the first anomalous live point arrives after the series was discovered
        anomaly_ts = base - period
        cw.put_metric_data(Namespace=ns, MetricData=[{"MetricName": "Latency", "Value": 250.0, "Unit": "Milliseconds",
                                                       "Dimensions": dims,
                                                       "Timestamp": datetime.fromtimestamp(anomaly_ts + 10, UTC)}])
        second = ConnectorRunner(settings, publisher, clients, sources=("metrics",))
        await _run_polls(second, 1, timeout=60)

        def mine(_t: str, r: dict[str, Any]) -> bool:
            return r.get("tenant_id") == tenant

        pairs = await collect(backend.kafka_bootstrap, [T.RAW_TOPICS["metric"], T.INSIGHTS],
                              lambda ps: any(t == T.INSIGHTS and r["insight_type"] == "anomaly" for t, r in ps),
                              keep=mine, timeout=50, settle=2.0)
    finally:
        w.stop()
    # by event id: a producer retry on a busy broker may write a record twice (dedup drops the copy)
    raw = list({r["event_id"]: r for t, r in pairs if t == T.RAW_TOPICS["metric"]}.values())
    flagged = [r for r in raw if r.get("history")]
    assert len(flagged) >= n - 4 and any(r["value"] == 400.0 for r in flagged), "history not published as history"
    live = [r for r in raw if not r.get("history")]   # the first poll's live window, then the anomaly
    assert [r["value"] for r in live][-1] == 250.0 and max(r["value"] for r in live[:-1]) < 150.0, \
        [(r["timestamp"], r["value"], r["event_id"]) for r in live]
    insights = [r for t, r in pairs if t == T.INSIGHTS]
    anomalies = [r for r in insights if r["insight_type"] == "anomaly"]
    assert len(anomalies) == 1 and anomalies[0]["metrics"]["value"] == 250.0, insights
    assert datetime.fromisoformat(anomalies[0]["timestamp"]).timestamp() == anomaly_ts
    assert len(insights) == 1, f"history made insights: {[r['description'] for r in insights]}"
