"""The executions path: observations handed to the triggers' owner, alert rules delivered (JSONL, webhook, digest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agents.healing import executions as X
from agents.healing.logic.execution_metrics import ExecutionMetrics
from agents.healing.logic.healing import Observation

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)  # after the digest hour (08:00 UTC)


def _em(i: int, ok: bool = True, **kw: Any) -> ExecutionMetrics:
    t = T0 + timedelta(seconds=i)
    return ExecutionMetrics.model_validate({"execution_id": f"e{i}", "skill_name": "checkout", "tenant_id": "acme",
                                            "timestamp_start": t, "timestamp_end": t, "execution_succeeded": ok,
                                            "total_latency_ms": 200, **kw})


async def test_failures_forward_an_observation_and_deliver_alerts(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    forwarded: list[Observation] = []

    async def fake_forward(obs: Observation) -> None:
        forwarded.append(obs)

    monkeypatch.setattr(X, "forward", fake_forward)
    posts: list[dict[str, Any]] = []

    def hook(req: httpx.Request) -> httpx.Response:
        posts.append(orjson.loads(req.content))
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(hook))
    st = X.ExecutionsState(tmp_path, "https://hooks.example/kaizen", digest=True, client=client)
    for i in range(4):
        await st.handle(_em(i), T0 + timedelta(seconds=i))
    assert forwarded == [] and posts == []
    for i in range(4, 10):  # six failures in a row: error rate ≥ 20 % and 5 consecutive failures
        await st.handle(_em(i, ok=False, error_reason="boom"), T0 + timedelta(seconds=i))
    assert forwarded and forwarded[-1].component == "checkout" and (forwarded[-1].error_rate or 0) >= 0.2
    kinds = [orjson.loads(ln)["kind"] for ln in (tmp_path / X.ALERTS_FILE).read_bytes().splitlines()]
    assert "consecutive_failures" in kinds
    assert any("consecutive failures" in p["text"] for p in posts)  # real-time alert, Slack-compatible
    # quota above 80 %: a digest alert, held until the day's digest is sent
    rep = await st.handle(_em(20, free_tier_quota_pct_used=85.0, free_tier_quota_used_today=85,
                                 free_tier_quota_remaining=15), T0)
    assert rep.digested == 1 or rep.digest_sent == 1
    assert any("daily digest" in p["text"] for p in posts)
    await client.aclose()
