"""Alert delivery: JSONL event log, Slack-compatible webhook (async, timeout), daily digest."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import httpx
import orjson

from agents.healing.history import append_jsonl
from agents.healing.logic.alerts import Alert

__all__ = ["DailyDigest", "DeliveryReport", "Notifier", "digest_payload", "post_webhook", "slack_payload"]

_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """{"text": ..., "blocks": [...]} for one alert."""
    text = f"{_ICON.get(alert.severity, '')} [{alert.severity.upper()}] {alert.title}".strip()
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": text[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.message or alert.title}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text":
                f"tenant `{alert.tenant_id}` · skill `{alert.skill}` · {alert.kind} · {alert.timestamp.isoformat()}"}]},
        ],
    }


def digest_payload(alerts: list[Alert], day: date) -> dict[str, Any]:
    """One message summarising a day's digest alerts, grouped by kind."""
    by_kind: dict[str, list[Alert]] = {}
    for a in alerts:
        by_kind.setdefault(a.kind, []).append(a)
    lines = [f"*{kind}* ×{len(items)}: " + "; ".join(sorted({a.title for a in items}))[:500]
             for kind, items in sorted(by_kind.items())]
    text = f"kaizen daily digest {day.isoformat()}: {len(alerts)} alert(s)"
    return {"text": text, "blocks": [{"type": "header", "text": {"type": "plain_text", "text": text}},
                                      {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines) or "-"}}]}


async def post_webhook(client: httpx.AsyncClient, url: str, payload: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST the payload; True on 2xx. Failures (HTTP status, network, timeout) are logged, not raised."""
    try:
        resp = await client.post(url, content=orjson.dumps(payload), timeout=timeout,
                                 headers={"Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        print(f"kaizen: webhook delivery failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    if resp.is_success:
        return True
    print(f"kaizen: webhook delivery failed: HTTP {resp.status_code}", file=sys.stderr)
    return False


@dataclass
class DailyDigest:
    """Digest-channel alerts accumulated and flushed once per day, at or after `at` (UTC), time passed in."""

    at: time = time(8, 0)
    pending: list[Alert] = field(default_factory=list)
    last_flush: date | None = None

    def add(self, alert: Alert) -> None:
        self.pending.append(alert)

    def due(self, now: datetime) -> bool:
        return bool(self.pending) and now.time() >= self.at and self.last_flush != now.date()

    def flush(self, now: datetime) -> list[Alert]:
        """The accumulated alerts if due (and mark today flushed), else []."""
        if not self.due(now):
            return []
        out, self.pending, self.last_flush = self.pending, [], now.date()
        return out


@dataclass
class DeliveryReport:
    logged: int = 0
    realtime_sent: int = 0
    digested: int = 0
    digest_sent: int = 0
    failures: int = 0


class Notifier:
    """Every alert goes to the JSONL log; real-time alerts to the webhook at once; digest alerts are
    accumulated (when digest mode is on — otherwise they are sent at once too) and sent as one message
    per day. "both" means real-time and digest. Never raises on delivery problems."""

    def __init__(self, jsonl_path: Path | None, webhook_url: str | None, client: httpx.AsyncClient | None,
                 digest: bool = True, digest_at: time = time(8, 0), timeout: float = 5.0) -> None:
        self.jsonl_path, self.webhook_url, self.client = jsonl_path, webhook_url, client
        self.digest_enabled, self.timeout = digest, timeout
        self.digest = DailyDigest(at=digest_at)

    async def _send(self, payload: dict[str, Any]) -> bool:
        if not self.webhook_url or self.client is None:
            return False
        return await post_webhook(self.client, self.webhook_url, payload, self.timeout)

    async def dispatch(self, alerts: Iterable[Alert], now: datetime) -> DeliveryReport:
        alerts = list(alerts)
        rep = DeliveryReport()
        if alerts and self.jsonl_path is not None:
            lines = [orjson.dumps(a.model_dump(mode="json")) for a in alerts]
            if await asyncio.to_thread(append_jsonl, lines, self.jsonl_path):
                rep.logged = len(alerts)
            else:
                rep.failures += 1
        for a in alerts:
            if a.channel in {"digest", "both"} and self.digest_enabled:
                self.digest.add(a)
                rep.digested += 1
            if a.channel in {"realtime", "both"} or not self.digest_enabled:
                if await self._send(slack_payload(a)):
                    rep.realtime_sent += 1
                elif self.webhook_url:
                    rep.failures += 1
        batch = self.digest.flush(now)
        if batch:
            if await self._send(digest_payload(batch, now.date())):
                rep.digest_sent = len(batch)
            elif self.webhook_url:
                rep.failures += 1
                self.digest.pending[:0] = batch  # kept for the next tick
                self.digest.last_flush = None
        return rep

    async def tick(self, now: datetime) -> DeliveryReport:
        """Flush the digest if it is due (call periodically when no alerts arrive)."""
        return await self.dispatch([], now)
