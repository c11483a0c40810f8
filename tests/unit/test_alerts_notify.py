"""Alert rules of the roadmap seed and their delivery to JSONL and a real local webhook server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from agents.healing.logic.alerts import AlertEvaluator, AlertRules
from agents.healing.logic.execution_metrics import ExecutionMetrics, compute_baselines, quota_status
from agents.healing.notify import Notifier, post_webhook

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)


def em(i: int, ok: bool = True, latency: int = 1000, cost: float = 0.01, **kw: object) -> ExecutionMetrics:
    t = T0 + timedelta(minutes=i)
    return ExecutionMetrics.model_validate({
        "execution_id": f"e{i}", "skill_name": "git-push", "timestamp_start": t, "timestamp_end": t,
        "execution_succeeded": ok, "total_latency_ms": latency, "cost_usd": cost, "tenant_id": "acme", **kw})


BASE = compute_baselines([em(i, latency=1000 + i) for i in range(100)])["git-push"]


def kinds(ev: AlertEvaluator, recs: list[ExecutionMetrics]) -> list[str]:
    return [a.kind for r in recs for a in ev.evaluate(r, BASE, r.timestamp_end)]


def test_consecutive_failures_and_success_rate_are_critical_realtime() -> None:
    ev = AlertEvaluator()
    got = [a for i in range(25) for a in ev.evaluate(em(i, ok=i < 20), BASE, T0 + timedelta(minutes=i))]
    assert [a.kind for a in got] == ["success_rate", "consecutive_failures"]
    assert got[1].evidence["streak"] == 5
    assert all(a.severity == "critical" and a.channel == "realtime" for a in got)
    assert got[1].action == "notify_investigate"
    assert kinds(AlertEvaluator(), [em(i, ok=i % 5 != 0) for i in range(1, 20)]) == []  # 4 in a row max


def test_quota_thresholds() -> None:
    ev = AlertEvaluator(AlertRules(cooldown_seconds=0))
    assert kinds(ev, [em(1, free_tier_quota_pct_used=80.0)]) == []
    (high,) = ev.evaluate(em(2, free_tier_quota_pct_used=81.0), None, T0)
    assert (high.kind, high.severity, high.channel) == ("quota_high", "warning", "digest")
    (crit,) = ev.evaluate(em(3, free_tier_quota_pct_used=96.0), None, T0)
    assert (crit.kind, crit.severity, crit.channel) == ("quota_critical", "critical", "realtime")
    (gone,) = ev.evaluate(em(4, free_tier_quota_pct_used=100.0), None, T0)
    assert gone.kind == "quota_exhausted" and gone.action == "notify_pause_skill"
    polled = ev.quota(quota_status("openai", 5000, 5000, T0), T0)
    assert [a.kind for a in polled] == ["quota_exhausted"]


def test_latency_cost_fingerprint_vendor_and_cooldown() -> None:
    ev = AlertEvaluator()
    slow = kinds(ev, [em(i, latency=5000) for i in range(10)])
    assert slow == ["latency_p95"]  # once per cooldown, not per execution
    assert kinds(AlertEvaluator(), [em(i, cost=0.05) for i in range(6)]) == ["cost_spike"]
    fp = AlertEvaluator().evaluate(em(1, fingerprint="abc", expected_fingerprint="def"), BASE, T0)
    assert [(a.kind, a.channel) for a in fp] == [("fingerprint_mismatch", "realtime")]
    assert AlertEvaluator().vendor("openai", "operational", T0) == []
    (v,) = AlertEvaluator().vendor("openai", "degraded_performance", T0)
    assert v.channel == "both" and v.severity == "warning"
    later = kinds(ev, [em(200, latency=5000)])
    assert later == ["latency_p95"]  # after the hour's cooldown it fires again


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.received, _Hook.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


async def test_realtime_webhook_jsonl_and_daily_digest(tmp_path: Path, hook: str) -> None:
    log = tmp_path / "anomalies.jsonl"
    ev = AlertEvaluator(AlertRules(cooldown_seconds=0))
    async with httpx.AsyncClient() as client:
        n = Notifier(log, hook, client, digest=True, digest_at=time(8, 0))
        crit = ev.evaluate(em(1, free_tier_quota_pct_used=96.0), None, T0)
        warn = ev.evaluate(em(2, free_tier_quota_pct_used=85.0), None, T0)
        rep = await n.dispatch(crit + warn, T0)  # 06:00: before the digest hour
        assert (rep.logged, rep.realtime_sent, rep.digested, rep.digest_sent) == (2, 1, 1, 0)
        assert len(_Hook.received) == 1
        msg = _Hook.received[0]
        assert "quota" in str(msg["text"]) and isinstance(msg["blocks"], list) and msg["blocks"]
        await n.dispatch(ev.evaluate(em(3, free_tier_quota_pct_used=90.0), None, T0), T0 + timedelta(hours=1))
        assert len(_Hook.received) == 1
        rep = await n.tick(T0 + timedelta(hours=2))  # 08:00: flush once
        assert rep.digest_sent == 2 and "daily digest" in str(_Hook.received[1]["text"])
        await n.dispatch(ev.evaluate(em(4, free_tier_quota_pct_used=90.0), None, T0), T0 + timedelta(hours=3))
        assert len(_Hook.received) == 2  # already flushed today
        assert (await n.tick(T0 + timedelta(days=1, hours=2))).digest_sent == 1
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["quota_critical", "quota_high", "quota_high", "quota_high"]


async def test_webhook_failures_are_reported_not_raised(hook: str, capsys: pytest.CaptureFixture[str]) -> None:
    _Hook.status = 500
    async with httpx.AsyncClient() as client:
        assert await post_webhook(client, hook, {"text": "x"}) is False
        assert await post_webhook(client, "http://127.0.0.1:9/none", {"text": "x"}, timeout=1.0) is False
        n = Notifier(None, hook, client, digest=False)
        rep = await n.dispatch(AlertEvaluator().evaluate(em(1, free_tier_quota_pct_used=85.0), None, T0), T0)
        assert rep.failures == 1 and rep.realtime_sent == 0  # digest off: sent at once, and it failed
    assert "HTTP 500" in capsys.readouterr().err
