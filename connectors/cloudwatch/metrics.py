"""The metrics source: ListMetrics discovery, GetMetricData in aligned windows, a cursor that neither skips nor repeats."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from botocore.exceptions import ClientError

from connectors.cloudwatch.base import SourceBatch
from connectors.cloudwatch.client import GuardedClient
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.mapping import (
    DEFAULT_TENANT,
    align_down,
    dims_to_dict,
    tenant_allowed,
    to_datetime,
)
from streams.records import MetricDataPoint, Record
from streams.settings import Settings

log = structlog.get_logger(__name__)

MAX_QUERIES_PER_CALL = 500  # GetMetricData limit
MAX_DATAPOINTS_PER_CALL = 100_800
HIGH_RESOLUTION_RETENTION = 3 * 3600
HISTORY_MAX_PERIODS = 2880


_PERCENTILE_RE = re.compile(r"^(p|tm|wm|tc|ts|pr)[\d(]|^iqm$", re.IGNORECASE)


def is_percentile(stat: str) -> bool:
    """Percentile-style extended statistics (p95, tm99, wm(10%:90%), IQM, ...)."""
    return bool(_PERCENTILE_RE.match(stat))


class MetricsSource:
    """Metrics of one namespace, pulled in complete, period-aligned windows.

    Cursor (`metrics:<namespace>`): `end` — the epoch second where the last published complete window
    ends — and `emitted` — per series, the window starts already published inside the lag window;
    `known` — the metrics whose history was read (see History below).
    Each poll queries [end − lag, now aligned down to the period), emits only (series, window) pairs not
    yet emitted, and after Kafka acknowledged them stores the new end and the emitted set pruned to the
    next lag window. So a restart neither skips nor repeats, and datapoints arriving up to
    CLOUDWATCH_METRICS_LAG_SECONDS late are still picked up (once). A window already emitted is not
    re-emitted with a late-corrected value.

    History: a metric discovered for the first time has its last CLOUDWATCH_METRICS_HISTORY_SECONDS read
    back in the same poll as its first live window, the points before that window published with
    history=true (scoring learns them and makes no insight of them), so a new series is scored from
    its first live point instead of warming up blind. At most CLOUDWATCH_METRICS_HISTORY_CALLS_PER_POLL
    GetMetricData calls go to history per poll; metrics beyond that wait (not even their live points are
    read) and are taken on later polls, their skipped live points then being history too. A metric
    becomes `known` in the cursor only with the commit after Kafka acknowledged its points, so a restart
    resumes the backfill. A cursor written before this feature marks every metric it sees as known.
    """

    kind = "metric"
    client_name = "cloudwatch"

    def __init__(
        self, client: GuardedClient, cursors: CursorStore, settings: Settings, *, namespace: str | None = None,
        initial_lookback_seconds: int | None = None, max_periods_per_poll: int = 1440,
        max_unit_lookups_per_poll: int = 100,
    ) -> None:
        self.client = client
        self.cursors = cursors
        self.settings = settings
        self.namespace = namespace or settings.cloudwatch_namespace
        self.name = f"metrics:{self.namespace}"
        self.period = int(settings.cloudwatch_metrics_period)
        self.lag = int(settings.cloudwatch_metrics_lag_seconds)
        self.initial_lookback = int(initial_lookback_seconds or max(self.lag, self.period))
        self.max_periods_per_poll = max_periods_per_poll
        # At most HISTORY_MAX_PERIODS periods (2 days of 1-minute data): a detector needs a few hundred
        # points, and each period costs the endpoint work. CloudWatch keeps sub-minute (high-resolution)
        # datapoints for 3 hours only and refuses periods under a minute for older ranges.
        self.history_seconds = max(0, min(int(settings.cloudwatch_metrics_history_seconds),
                                          HISTORY_MAX_PERIODS * self.period,
                                          HIGH_RESOLUTION_RETENTION if self.period < 60 else 1 << 40))
        self.history_calls = max(1, int(settings.cloudwatch_metrics_history_calls_per_poll))
        self.history_pending = 0
        self.statistics = list(settings.cloudwatch_metrics_statistics)
        self.unsupported_statistics: dict[str, str] = {}
        self._percentiles_checked = False
        self.series_seen = 0
        self.max_unit_lookups = max_unit_lookups_per_poll
        self.units: dict[str, str] | None = None  # metric identity → unit, learnt once per metric
        self.last_window: tuple[str, str] | None = None

    # --- discovery --------------------------------------------------------------------------
    async def discover(self) -> list[dict[str, Any]]:
        """ListMetrics with paging, filtered by namespace, CLOUDWATCH_DIMENSION_FILTERS and tenant filter."""
        kwargs: dict[str, Any] = {"Namespace": self.namespace}
        dims = [{"Name": k, **({"Value": v} if v not in ("", "*") else {})}
                for k, v in self.settings.cloudwatch_dimension_filters.items()]
        tenants = self.settings.cloudwatch_tenant_filter
        if len(tenants) == 1 and self.settings.cloudwatch_tenant_dimension not in self.settings.cloudwatch_dimension_filters:
            dims.append({"Name": self.settings.cloudwatch_tenant_dimension, "Value": tenants[0]})
        if dims:
            kwargs["Dimensions"] = dims
        metrics: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.client.call("list_metrics", **kwargs, **({"NextToken": token} if token else {}))
            metrics.extend(page.get("Metrics", []))
            token = page.get("NextToken")
            if not token:
                break
        tenant_dim = self.settings.cloudwatch_tenant_dimension
        # One query per metric: moto's ListMetrics repeats a metric with two or more dimensions once per
        # datapoint stored (its dimension comparison never matches), so queries would grow with every point.
        unique = list({self.metric_key(m): m for m in metrics}.values())
        return [m for m in unique if tenant_allowed(
            dims_to_dict(m.get("Dimensions")).get(tenant_dim, DEFAULT_TENANT), self.settings.cloudwatch_tenant_filter)]

    # --- percentile support (moto answers 500 to percentile statistics) ---------------------------
    async def _check_percentiles(self, metric: dict[str, Any], start: int, end: int) -> None:
        """Ask once for one percentile; if the endpoint answers an error but a plain statistic works, the
        percentiles are skipped from then on (and listed in status). An outage raises and is asked again."""
        wanted = [s for s in self.statistics if is_percentile(s)]
        if wanted:
            try:
                await self._get_data([self._query(0, metric, wanted[0])], start, end)
            except ClientError as exc:
                await self._get_data([self._query(0, metric, "Sum")], start, end)  # raises if the endpoint is down
                for s in wanted:
                    self.unsupported_statistics[s] = f"endpoint rejects percentile statistics: {exc}"[:200]
                log.warning("percentile statistics unsupported by the endpoint; skipped", statistics=wanted)
        self._percentiles_checked = True

    @staticmethod
    def metric_key(metric: dict[str, Any]) -> str:
        dims = ",".join(f"{k}={v}" for k, v in sorted(dims_to_dict(metric.get("Dimensions")).items()))
        return f"{metric['MetricName']}|{dims}"

    async def _learn_units(self, seen_at: dict[str, tuple[dict[str, Any], int]]) -> None:
        """GetMetricData does not return units: ask GetMetricStatistics once per metric that has data, for
        one period where it has a value (at most `max_unit_lookups_per_poll` per poll; the rest next poll)."""
        assert self.units is not None
        unknown = [(k, m, t) for k, (m, t) in seen_at.items() if k not in self.units][: self.max_unit_lookups]
        for key, m, t in unknown:
            res = await self.client.call(
                "get_metric_statistics", Namespace=m.get("Namespace", self.namespace), MetricName=m["MetricName"],
                Dimensions=m.get("Dimensions", []), StartTime=datetime.fromtimestamp(t, UTC),
                EndTime=datetime.fromtimestamp(t + self.period, UTC), Period=self.period, Statistics=["SampleCount"])
            points = res.get("Datapoints", [])
            self.units[key] = str(points[0].get("Unit") or "None") if points else "None"

    def _query(self, i: int, metric: dict[str, Any], stat: str) -> dict[str, Any]:
        return {"Id": f"q{i}", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": metric.get("Namespace", self.namespace), "MetricName": metric["MetricName"],
                       "Dimensions": metric.get("Dimensions", [])},
            "Period": self.period, "Stat": stat}}

    async def _get_data(self, queries: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.client.call(
                "get_metric_data", MetricDataQueries=queries, StartTime=datetime.fromtimestamp(start, UTC),
                EndTime=datetime.fromtimestamp(end, UTC), ScanBy="TimestampAscending",
                **({"NextToken": token} if token else {}))
            results.extend(page.get("MetricDataResults", []))
            token = page.get("NextToken")
            if not token:
                return results

    # --- one poll ---------------------------------------------------------------------------
    def window(self, now: datetime) -> tuple[int, int, int]:
        """(query start, query end, previous cursor end) in epoch seconds, all period-aligned."""
        cursor = self.cursors.load(self.name)
        now_aligned = align_down(now.timestamp(), self.period)
        prev_end = int(cursor.get("end") or align_down(now_aligned - self.initial_lookback, self.period))
        start = align_down(prev_end - self.lag, self.period)
        end = min(now_aligned, max(prev_end + self.period, start + self.period * self.max_periods_per_poll))
        if end < prev_end:  # the clock went back behind the cursor: nothing to do yet
            return start, start, prev_end
        return start, end, prev_end

    async def collect(self, now: datetime) -> SourceBatch:
        start, end, prev_end = self.window(now)
        cursor = self.cursors.load(self.name)
        emitted: dict[str, list[int]] = {k: list(v) for k, v in (cursor.get("emitted") or {}).items()}
        batch = SourceBatch(kind=self.kind)
        if end <= start:
            return batch
        metrics = await self.discover()
        self.series_seen = len(metrics)
        known, fresh = self._split_known(cursor, metrics)
        if metrics and not self._percentiles_checked:
            await self._check_percentiles(metrics[0], start, end)
        if self.units is None:
            self.units = dict(cursor.get("units") or {})
        stats = [s for s in self.statistics if s not in self.unsupported_statistics]
        answers: list[tuple[dict[str, Any], dict[str, Any], str]] = []
        seen_at: dict[str, tuple[dict[str, Any], int]] = {}
        # metrics seen before: the live window; new ones: their history and the live window, within budget
        live = [m for m in metrics if self.metric_key(m) in known]
        await self._query_window([(m, s) for m in live for s in stats], start, end, answers, seen_at)
        hist_start = align_down(start - self.history_seconds, self.period)
        backfilled = await self._backfill(fresh, stats, hist_start, end, answers, seen_at)
        new_known = sorted(known | {self.metric_key(m) for m in backfilled})
        await self._learn_units(seen_at)
        current = {self.metric_key(m) for m in metrics}
        units = {k: v for k, v in self.units.items() if k in current}
        seen = {k: set(v) for k, v in emitted.items()}
        for result, m, stat in answers:
            first = hist_start if self.metric_key(m) not in known else start
            self._map(result, m, stat, first, end, seen, batch.records, history_before=start)
        keep_from = align_down(end - self.lag, self.period)
        new_emitted = {k: sorted(t for t in v if t >= keep_from) for k, v in seen.items()}
        new_emitted = {k: v for k, v in new_emitted.items() if v}
        batch.stats = {"window_start": start, "window_end": end, "series": len(metrics),
                       "queries": len(answers), "history_metrics": len(backfilled),
                       "history_pending": len(fresh) - len(backfilled)}
        self.history_pending = len(fresh) - len(backfilled)

        async def commit() -> None:
            value = {"end": max(end, prev_end), "emitted": new_emitted, "units": units, "period": self.period,
                     "namespace": self.namespace, "known": new_known}
            await asyncio.to_thread(self.cursors.save, self.name, value)
            self.last_window = (datetime.fromtimestamp(start, UTC).isoformat(),
                                datetime.fromtimestamp(end, UTC).isoformat())

        batch.commit = commit
        return batch

    def _split_known(self, cursor: dict[str, Any], metrics: list[dict[str, Any]]
                     ) -> tuple[set[str], list[dict[str, Any]]]:
        """(metrics whose history was read, metrics new to this source). A cursor of an older version (an
        end but no `known`) and a zero history setting make every metric known: nothing to backfill."""
        keys = {self.metric_key(m) for m in metrics}
        if self.history_seconds <= 0 or ("known" not in cursor and cursor.get("end")):
            return keys, []
        known = set(cursor.get("known") or ()) & keys
        return known, [m for m in metrics if self.metric_key(m) not in known]

    async def _query_window(self, pairs: list[tuple[dict[str, Any], str]], start: int, end: int,
                            answers: list[tuple[dict[str, Any], dict[str, Any], str]],
                            seen_at: dict[str, tuple[dict[str, Any], int]], max_calls: int | None = None) -> int:
        """GetMetricData for (metric, statistic) pairs over [start, end), batched within the API limits;
        with `max_calls`, stops before exceeding it. Returns how many pairs were queried."""
        per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // max(1, (end - start) // self.period)))
        done = calls = 0
        for i in range(0, len(pairs), per_call):
            if max_calls is not None and calls >= max_calls:
                break
            chunk = pairs[i:i + per_call]
            queries = [self._query(j, m, s) for j, (m, s) in enumerate(chunk)]
            for result in await self._get_data(queries, start, end):
                m, stat = chunk[int(str(result["Id"])[1:])]
                answers.append((result, m, stat))
                if result.get("Timestamps"):
                    seen_at.setdefault(self.metric_key(m), (m, int(to_datetime(result["Timestamps"][0]).timestamp())))
            calls += 1
            done += len(chunk)
        return done

    async def _backfill(self, fresh: list[dict[str, Any]], stats: list[str], start: int, end: int,
                        answers: list[tuple[dict[str, Any], dict[str, Any], str]],
                        seen_at: dict[str, tuple[dict[str, Any], int]]) -> list[dict[str, Any]]:
        """History and live window of new metrics, whole metrics only, within the per-poll call budget."""
        if not fresh:
            return []
        pairs = [(m, s) for m in fresh for s in stats]
        per_call = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // max(1, (end - start) // self.period)))
        per_metric = max(1, len(stats))
        # whole metrics per poll, so no metric is left with some statistics backfilled and others not
        metrics_per_poll = max(1, (self.history_calls * per_call) // per_metric)
        take = fresh[:metrics_per_poll]
        await self._query_window(pairs[:len(take) * per_metric], start, end, answers, seen_at)
        return take

    def _map(self, result: dict[str, Any], metric: dict[str, Any], stat: str, start: int, end: int,
             seen: dict[str, set[int]], out: list[Record], history_before: int = 0) -> None:
        dims = dims_to_dict(metric.get("Dimensions"))
        tenant = dims.get(self.settings.cloudwatch_tenant_dimension, DEFAULT_TENANT)
        unit = (self.units or {}).get(self.metric_key(metric), "None")
        for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
            t = int(to_datetime(ts).timestamp())
            if t < start or t + self.period > end:
                continue  # outside the window or not complete yet
            point = MetricDataPoint(
                metric_name=metric["MetricName"], value=float(value), unit=unit, dimensions=dims,
                timestamp=datetime.fromtimestamp(t, UTC), tenant_id=tenant,
                namespace=metric.get("Namespace", self.namespace), statistic=stat, history=t < history_before,
            )
            key = point.series_key()
            if t in seen.setdefault(key, set()):
                continue
            seen[key].add(t)
            out.append(point)

    def status(self) -> dict[str, Any]:
        cursor = self.cursors.load(self.name)
        end = cursor.get("end")
        return {
            "namespace": self.namespace, "period": self.period, "lag_seconds": self.lag,
            "cursor_end": datetime.fromtimestamp(int(end), UTC).isoformat() if end else None,
            "series": self.series_seen, "statistics": self.statistics, "history_seconds": self.history_seconds,
            "history_pending_metrics": self.history_pending,
            "unsupported_statistics": sorted(self.unsupported_statistics),
        }
