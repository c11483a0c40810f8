"""The logs source: log groups by glob, FilterLogEvents (or Logs Insights) since a per-group cursor, sampled."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from connectors.cloudwatch.base import SourceBatch, SourceError
from connectors.cloudwatch.client import GuardedClient, is_outage
from connectors.cloudwatch.cursor import CursorStore
from connectors.cloudwatch.mapping import (
    log_tenant,
    parse_json_fields,
    parse_severity,
    sample_keep,
    tenant_allowed,
    to_datetime,
)
from streams.records import LogEvent
from streams.settings import Settings

MAX_GROUPS_PER_QUERY = 50  # Logs Insights limit


def glob_prefix(pattern: str) -> str:
    """The literal prefix of a glob (for DescribeLogGroups' logGroupNamePrefix)."""
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:i]
    return pattern


def _id_key(stream_and_event_id: str) -> str:
    """A short stable key of a CloudWatch log event (its ids run to ~60 characters; a busy group's cursor
    holds one per line of the lag window)."""
    return hashlib.blake2b(stream_and_event_id.encode(), digest_size=8).hexdigest()


class LogsSource:
    """Log lines of the groups matching CLOUDWATCH_LOG_GROUP_PATTERN.

    FilterLogEvents mode (default): cursor per group `logs:<group>` = the newest event timestamp (ms)
    and the CloudWatch event ids seen within CLOUDWATCH_LOGS_LAG_SECONDS of it; the next poll starts
    that lag before the newest timestamp and skips those ids, so a line ingested late (CloudWatch
    Logs stamps lines with the time the application gave, and delivers them when they arrive) is
    still picked up, and none is repeated. Logs Insights mode (CLOUDWATCH_LOGS_INSIGHTS_QUERY
    set): one StartQuery per ≤50 groups over [cursor end, now − 1 s) in whole seconds, results filtered
    to that window client-side; cursor `insights:<pattern>` = the window end.
    Sampling (CLOUDWATCH_LOG_SAMPLING_RATE) is deterministic by event id and keeps every ERROR,
    CRITICAL and FATAL line; the cursor advances past sampled-out lines.
    """

    kind = "log"
    client_name = "logs"

    def __init__(
        self, client: GuardedClient, cursors: CursorStore, settings: Settings, *,
        initial_lookback_seconds: int = 3600, insights_timeout_seconds: float = 60.0,
        insights_poll_seconds: float = 0.5, page_limit: int | None = None,
    ) -> None:
        self.client = client
        self.cursors = cursors
        self.settings = settings
        self.pattern = settings.cloudwatch_log_group_pattern
        self.name = f"logs:{self.pattern}"
        self.initial_lookback_ms = initial_lookback_seconds * 1000
        self.insights_timeout = insights_timeout_seconds
        self.insights_poll = insights_poll_seconds
        self.page_limit = page_limit  # FilterLogEvents page size (None: the service default, up to 10 000)
        self.groups: list[str] = []
        self.sampled_out = 0
        self.filtered_out = 0
        self.group_errors: dict[str, str] = {}

    async def discover(self) -> list[str]:
        prefix = glob_prefix(self.pattern)
        groups: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"logGroupNamePrefix": prefix} if prefix else {}
            if token:
                kwargs["nextToken"] = token
            page = await self.client.call("describe_log_groups", **kwargs)
            groups.extend(g["logGroupName"] for g in page.get("logGroups", [])
                          if fnmatch.fnmatchcase(g["logGroupName"], self.pattern))
            token = page.get("nextToken")
            if not token:
                break
        self.groups = groups
        return groups

    def _event(self, group: str, stream: str, message: str, ts: Any) -> LogEvent | None:
        fields = parse_json_fields(message)
        tenant = log_tenant(fields, stream, group, tenant_field=self.settings.cloudwatch_tenant_dimension)
        if not tenant_allowed(tenant, self.settings.cloudwatch_tenant_filter):
            self.filtered_out += 1
            return None
        ev = LogEvent(log_group=group, log_stream=stream, message=message, timestamp=to_datetime(ts),
                      fields=fields, tenant_id=tenant, severity=parse_severity(message, fields))
        if not sample_keep(ev.event_id, ev.severity, self.settings.cloudwatch_log_sampling_rate):
            self.sampled_out += 1
            return None
        return ev

    async def collect(self, now: datetime) -> SourceBatch:
        groups = await self.discover()
        if self.settings.cloudwatch_logs_insights_query:
            return await self._collect_insights(groups, now)
        batch = SourceBatch(kind=self.kind)
        new_cursors: dict[str, dict[str, Any]] = {}
        now_ms = int(now.timestamp() * 1000)
        lag_ms = self.settings.cloudwatch_logs_lag_seconds * 1000
        for group in groups:
            cursor = self.cursors.load(f"logs:{group}")
            last_ts = int(cursor.get("ts", now_ms - self.initial_lookback_ms))
            seen: dict[str, int] = dict(cursor.get("seen", {}))
            seen.update(dict.fromkeys((_id_key(i) for i in cursor.get("ids", [])), last_ts))  # older cursors
            start_ms = last_ts - lag_ms if "ts" in cursor else last_ts
            try:
                events = await self._filter(group, start_ms, now_ms)
            except ClientError as exc:
                if is_outage(exc):
                    raise
                self.group_errors[group] = str(exc)[:200]  # e.g. deleted since DescribeLogGroups: skip it
                continue
            max_ts = last_ts
            for e in events:
                ts = int(e["timestamp"])
                key = _id_key(f'{e.get("logStreamName", "")}/{e.get("eventId", "")}')
                if ts < start_ms or key in seen:
                    continue
                seen[key] = ts
                max_ts = max(max_ts, ts)
                rec = self._event(group, str(e.get("logStreamName", "")), str(e.get("message", "")), ts)
                if rec is not None:
                    batch.records.append(rec)
            floor = max_ts - lag_ms  # ids older than the lag can no longer come back in a poll's window
            new_cursors[group] = {"ts": max_ts, "seen": {k: t for k, t in seen.items() if t >= floor}}
            await asyncio.sleep(0)

        async def commit() -> None:
            for group, value in new_cursors.items():
                await asyncio.to_thread(self.cursors.save, f"logs:{group}", value)

        batch.commit = commit
        batch.stats = {"groups": len(groups)}
        return batch

    async def _filter(self, group: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms, "endTime": end_ms}
            if self.settings.cloudwatch_log_filter_pattern:
                kwargs["filterPattern"] = self.settings.cloudwatch_log_filter_pattern
            if self.page_limit:
                kwargs["limit"] = self.page_limit
            if token:
                kwargs["nextToken"] = token
            page = await self.client.call("filter_log_events", **kwargs)
            events.extend(page.get("events", []))
            next_token = page.get("nextToken")
            if not next_token or next_token == token:
                return events
            token = next_token

    async def _collect_insights(self, groups: list[str], now: datetime) -> SourceBatch:
        batch = SourceBatch(kind=self.kind)
        key = f"insights:{self.pattern}"
        cursor = self.cursors.load(key)
        end_s = int(now.timestamp()) - 1
        start_s = int(cursor.get("end", end_s - self.initial_lookback_ms // 1000))
        if end_s <= start_s or not groups:
            return batch
        for i in range(0, len(groups), MAX_GROUPS_PER_QUERY):
            for row in await self._insights(groups[i:i + MAX_GROUPS_PER_QUERY], start_s, end_s):
                ts = to_datetime(row.get("@timestamp", ""))
                if not start_s <= ts.timestamp() < end_s:
                    continue
                group = str(row.get("@log", "")).split(":", 1)[-1] or groups[i]
                rec = self._event(group, str(row.get("@logStream", "")), str(row.get("@message", "")), ts)
                if rec is not None:
                    batch.records.append(rec)

        async def commit() -> None:
            await asyncio.to_thread(self.cursors.save, key, {"end": end_s})

        batch.commit = commit
        batch.stats = {"groups": len(groups), "insights_window": [start_s, end_s]}
        return batch

    async def _insights(self, groups: list[str], start_s: int, end_s: int) -> Iterable[dict[str, Any]]:
        started = await self.client.call(
            "start_query", logGroupNames=groups, startTime=start_s, endTime=end_s,
            queryString=self.settings.cloudwatch_logs_insights_query, limit=10000)
        deadline = time.monotonic() + self.insights_timeout
        while True:
            res = await self.client.call("get_query_results", queryId=started["queryId"])
            status = res.get("status")
            if status == "Complete":
                return [{f["field"]: f.get("value") for f in row} for row in res.get("results", [])]
            if status in {"Failed", "Cancelled", "Timeout", "Unknown"}:
                raise SourceError(f"Logs Insights query {started['queryId']} ended {status}")
            if time.monotonic() > deadline:
                raise SourceError(f"Logs Insights query {started['queryId']} still {status} after "
                                   f"{self.insights_timeout:.0f}s")
            await asyncio.sleep(self.insights_poll)

    def status(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern, "groups": list(self.groups),
            "mode": "insights" if self.settings.cloudwatch_logs_insights_query else "filter_log_events",
            "sampling_rate": self.settings.cloudwatch_log_sampling_rate,
            "sampled_out": self.sampled_out, "filtered_out": self.filtered_out, "group_errors": self.group_errors,
        }
