"""ExecutionMetrics: cost, quota, baselines, anomaly z-scores, telemetry conversion, JSONL log."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.healing.history import log_execution_metrics, read_execution_metrics
from agents.healing.logic.execution_metrics import (
    ExecutionMetrics,
    calculate_cost,
    compute_baselines,
    cost_tier_for,
    detect_anomaly,
    percentile,
    quota_status,
    to_insights,
    to_metric_points,
    track_free_tier_quota,
)

T0 = datetime(2026, 2, 7, 12, tzinfo=UTC)


def em(i: int, latency: int = 3000, ok: bool = True, cost: float = 0.01, tokens: int = 350,
       skill: str = "git-push", **kw: object) -> ExecutionMetrics:
    start = T0 + timedelta(minutes=i)
    return ExecutionMetrics.model_validate({
        "execution_id": f"e{i}", "skill_name": skill, "timestamp_start": start,
        "timestamp_end": start + timedelta(milliseconds=latency), "execution_succeeded": ok,
        "execution_failed": not ok, "total_latency_ms": latency, "tokens_used": tokens, "cost_usd": cost,
        "cost_tier": "Standard", "free_tier_quota_pct_used": tokens / 1000.0, **kw,
    })


def history(n: int = 300, seed: int = 1) -> list[ExecutionMetrics]:
    rng = random.Random(seed)
    return [em(i, latency=int(rng.gauss(3000, 300)), ok=rng.random() > 0.02,
               cost=round(rng.gauss(0.0105, 0.001), 6), tokens=int(rng.gauss(350, 30))) for i in range(n)]


def test_cost_openai_bedrock_free_and_non_llm() -> None:
    assert calculate_cost("gpt-4", 1000, 500) == pytest.approx(0.03 + 0.03)
    assert calculate_cost("gpt-3.5-turbo", 2000, 1000) == pytest.approx(0.001 + 0.0015)
    assert calculate_cost("anthropic.claude-v2", 1000, 1000) == pytest.approx(0.032)
    assert calculate_cost("gpt-4", 1000, 500, free_tier=True) == 0.0
    assert calculate_cost(None, 1000, 500) == 0.0
    assert cost_tier_for("gpt-4") == "Premium" and cost_tier_for("gpt-4", free_tier=True) == "Free"
    assert cost_tier_for(None) == "Free"
    with pytest.raises(KeyError, match="no price"):
        calculate_cost("mystery-model", 1, 1)


def test_quota_levels_and_reset() -> None:
    now = datetime(2026, 2, 7, 18, tzinfo=UTC)
    assert quota_status("a", 500, 1000, now).warning_level == "GREEN"
    assert quota_status("a", 501, 1000, now).warning_level == "YELLOW"
    assert quota_status("a", 801, 1000, now).warning_level == "RED"
    s = quota_status("gh", 4950, 5000, now)
    assert s.remaining == 50 and s.pct_used == pytest.approx(99.0) and s.hours_until_reset == pytest.approx(6.0)
    statuses, worst = track_free_tier_quota({"a": 10, "b": 600}, {"a": 100, "b": 1000}, now)
    assert worst == "YELLOW" and statuses["a"].warning_level == "GREEN"


def test_baselines_percentiles_and_window() -> None:
    recs = [em(i, latency=1000 + 10 * i) for i in range(101)] + [em(200, skill="other", latency=5)]
    b = compute_baselines(recs)
    assert set(b) == {"git-push", "other"}
    g = b["git-push"]
    assert g.sample_size == 101 and g.latency_p50_ms == 1500 and g.latency_p95_ms == 1950
    assert g.latency_p99_ms == pytest.approx(1990) and g.success_rate == 1.0
    assert percentile([1.0, 2.0], 50) == 1.5
    windowed = compute_baselines(recs, window_days=1 / 24, now=T0 + timedelta(minutes=100))
    assert windowed["git-push"].sample_size == 61 and "other" not in windowed  # minutes 40..100


def test_anomaly_detects_known_anomalies_and_few_false_positives() -> None:
    hist = history()
    base = compute_baselines(hist)["git-push"]
    normal = history(200, seed=2)
    fp = sum(detect_anomaly(x, base).is_anomaly for x in normal if x.execution_succeeded)
    assert fp / len(normal) < 0.05
    slow = detect_anomaly(em(999, latency=30000), base)
    assert slow.is_anomaly and slow.dominant == "latency"
    costly = detect_anomaly(em(999, cost=0.05), base)
    assert costly.is_anomaly and costly.dominant == "cost"
    ok = detect_anomaly(em(999), base)
    assert not ok.is_anomaly and ok.score < 3.0


def test_to_metric_points_and_insights() -> None:
    base = compute_baselines(history())["git-push"]
    x = em(999, latency=30000, tenant_id="acme")
    points = to_metric_points(x)
    names = {p.metric_name: p for p in points}
    assert names["Latency"].value == 30000 and names["Latency"].tenant_id == "acme"
    assert names["Latency"].dimensions["skill"] == "git-push"
    assert len({p.event_id for p in points}) == len(points)
    (ins,) = to_insights(x, base)
    assert ins.problem_type == "latency" and ins.source == "execution_metrics"
    assert ins.metrics["current"] == 30000 and ins.affected_component == "git-push"
    assert to_insights(em(1000), base) == [] and to_insights(x, None) == []


def test_jsonl_log_roundtrip_tailing_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "execution_metrics.jsonl"
    recs = history(1000)
    for r in recs:
        assert log_execution_metrics(r, path)
    got, off = read_execution_metrics(path, 0)
    assert got == recs and off == path.stat().st_size
    with path.open("ab") as fh:
        fh.write(b'{"not": "metrics"}\n{"execution_id": "partial')
    errors: list[str] = []
    more, off2 = read_execution_metrics(path, off, errors)
    assert more == [] and len(errors) == 1 and off2 > off
    assert read_execution_metrics(path, off2) == ([], off2)  # the partial line waits for its newline


def test_log_never_raises_on_io_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert log_execution_metrics(em(1), blocker / "sub" / "m.jsonl") is False
    assert "could not append" in capsys.readouterr().err
