"""MetricsSource paging and batching (≤500 queries per GetMetricData, NextToken pages), windows and cursor.

moto never pages ListMetrics/GetMetricData and answers 500 to percentiles, so the paging logic is checked
here against a stand-in with boto3's method shapes; the real endpoint is exercised in tests/integration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.breaker import CircuitBreaker
from connectors.cloudwatch.client import API_CALLS, GuardedClient
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.metrics import MetricsSource
from streams.settings import Settings

PERIOD = 60
BASE = 1_800_000_000 - 1_800_000_000 % PERIOD


class PagingCloudWatch:
    def __init__(self, n_metrics: int) -> None:
        self.metrics = [{"Namespace": "NS", "MetricName": f"M{i}",
                         "Dimensions": [{"Name": "tenant_id", "Value": f"t{i % 3}"}]} for i in range(n_metrics)]
        self.gmd_calls: list[dict[str, Any]] = []
        self.list_calls = 0

    def list_metrics(self, **kw: Any) -> dict[str, Any]:
        self.list_calls += 1
        start = int(kw.get("NextToken", 0))
        page = self.metrics[start:start + 100]
        out: dict[str, Any] = {"Metrics": page}
        if start + 100 < len(self.metrics):
            out["NextToken"] = str(start + 100)
        return out

    def get_metric_statistics(self, **kw: Any) -> dict[str, Any]:
        return {"Datapoints": [{"SampleCount": 1.0, "Unit": "Count"}]}

    def get_metric_data(self, **kw: Any) -> dict[str, Any]:
        self.gmd_calls.append(kw)
        queries = kw["MetricDataQueries"]
        start, end = int(kw["StartTime"].timestamp()), int(kw["EndTime"].timestamp())
        stamps = [datetime.fromtimestamp(t, UTC) for t in range(start, end, PERIOD)]
        half = len(queries) // 2
        part = queries[half:] if kw.get("NextToken") else queries[:half]
        out: dict[str, Any] = {"MetricDataResults": [
            {"Id": q["Id"], "StatusCode": "Complete", "Timestamps": stamps, "Values": [1.0] * len(stamps)}
            for q in part]}
        if not kw.get("NextToken"):
            out["NextToken"] = "second-half"
        return out


def _source(tmp_path: Path, fake: PagingCloudWatch, **settings: Any) -> MetricsSource:
    settings.setdefault("cloudwatch_metrics_history_seconds", 0)  # history: its own test below
    s = Settings(cloudwatch_namespace="NS", cloudwatch_metrics_period=PERIOD, cloudwatch_metrics_lag_seconds=120,
                 cloudwatch_metrics_statistics=["Average", "Sum", "Maximum"], **settings)
    guarded = GuardedClient("cloudwatch", fake, CircuitBreaker("t"))
    return MetricsSource(guarded, CursorStore(tmp_path), s, initial_lookback_seconds=300)


async def test_batches_of_500_queries_pages_and_cursor(tmp_path: Path) -> None:
    fake = PagingCloudWatch(200)
    src = _source(tmp_path, fake)
    before = API_CALLS.labels("cloudwatch", "get_metric_data", "ok")._value.get()
    now = datetime.fromtimestamp(BASE + 17, UTC)
    batch = await src.collect(now)
    assert fake.list_calls == 2
    assert [len(c["MetricDataQueries"]) for c in fake.gmd_calls] == [500, 500, 100, 100]  # 600 queries, paged
    assert API_CALLS.labels("cloudwatch", "get_metric_data", "ok")._value.get() - before == 4
    first = fake.gmd_calls[0]
    assert int(first["StartTime"].timestamp()) % PERIOD == 0 and int(first["EndTime"].timestamp()) == BASE
    windows = (BASE - int(first["StartTime"].timestamp())) // PERIOD
    assert windows == (300 + 120) // PERIOD
    assert len(batch.records) == 600 * windows
    units = [r.model_dump()["unit"] for r in batch.records]  # ≤100 unit look-ups per poll: half known yet
    assert units.count("Count") == units.count("None") == 300 * windows
    await batch.commit()
    cursor = CursorStore(tmp_path).load("metrics:NS")
    assert cursor["end"] == BASE and all(min(v) >= BASE - 120 for v in cursor["emitted"].values())

    fake.gmd_calls.clear()
    again = await src.collect(now)  # same time: the lag window is re-read but nothing is emitted twice
    assert again.records == [] and fake.gmd_calls
    later = await src.collect(datetime.fromtimestamp(BASE + PERIOD + 1, UTC))
    assert len(later.records) == 600  # exactly one new window per series and statistic
    assert {r.model_dump()["unit"] for r in later.records} == {"Count"}


async def test_tenant_filter_and_dimension_filter_pushdown(tmp_path: Path) -> None:
    fake = PagingCloudWatch(30)
    calls: list[dict[str, Any]] = []
    original = fake.list_metrics

    def spy(**kw: Any) -> dict[str, Any]:
        calls.append(kw)
        return original(**kw)

    fake.list_metrics = spy  # type: ignore[method-assign]
    src = _source(tmp_path, fake, cloudwatch_tenant_filter=["t1"], cloudwatch_dimension_filters={"service": "*"})
    batch = await src.collect(datetime.fromtimestamp(BASE + 1, UTC))
    assert calls[0]["Dimensions"] == [{"Name": "service"}, {"Name": "tenant_id", "Value": "t1"}]
    assert batch.records and {r.model_dump()["tenant_id"] for r in batch.records} == {"t1"}


async def test_new_metrics_get_their_history_within_the_call_budget_resumably(tmp_path: Path) -> None:
    """Two hours of history at 1 minute: 120 points + the live window per query, so 840 queries fit a call
    by points but 500 by the query limit; 2 calls per poll take 1000 pairs = 333 whole metrics of 3
    statistics. 500 new metrics: two polls backfill them; the live window of waiting ones is not read."""
    fake = PagingCloudWatch(500)
    src = _source(tmp_path, fake, cloudwatch_metrics_history_seconds=7200,
                  cloudwatch_metrics_history_calls_per_poll=2)
    now = datetime.fromtimestamp(BASE + 17, UTC)
    batch = await src.collect(now)
    live_start = BASE - 300 - 120
    metrics = {r.metric_name for r in batch.records}
    assert len(metrics) == 333 and batch.stats["history_pending"] == 167
    hist = [r for r in batch.records if r.history]
    assert hist and all(r.timestamp.timestamp() < live_start for r in hist)
    assert min(r.timestamp.timestamp() for r in hist) == live_start - 7200
    assert all(not r.history for r in batch.records if r.timestamp.timestamp() >= live_start)
    await batch.commit()
    assert len(CursorStore(tmp_path).load("metrics:NS")["known"]) == 333
    # a restart: a new source on the same cursor resumes with the 167 others, their history up to now
    src2 = _source(tmp_path, fake, cloudwatch_metrics_history_seconds=7200,
                   cloudwatch_metrics_history_calls_per_poll=2)
    later = datetime.fromtimestamp(BASE + PERIOD + 1, UTC)
    batch2 = await src2.collect(later)
    rest = {r.metric_name for r in batch2.records if r.history}
    assert len(rest) == 167 and not rest & metrics
    assert {r.metric_name for r in batch2.records if not r.history} == metrics | rest
    await batch2.commit()
    batch3 = await src2.collect(datetime.fromtimestamp(BASE + 2 * PERIOD + 1, UTC))
    assert batch3.records and not any(r.history for r in batch3.records) and batch3.stats["history_pending"] == 0


async def test_a_cursor_from_before_history_backfills_nothing(tmp_path: Path) -> None:
    CursorStore(tmp_path).save("metrics:NS", {"end": BASE, "emitted": {}})
    src = _source(tmp_path, PagingCloudWatch(5), cloudwatch_metrics_history_seconds=7200)
    batch = await src.collect(datetime.fromtimestamp(BASE + PERIOD + 1, UTC))
    assert batch.records and not any(r.history for r in batch.records)
