"""Self-healing triggers, actions, cooldown, configuration and history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.healing.history import HealingHistory, load_healing_config
from agents.healing.logic.execution_metrics import ExecutionMetrics, compute_baselines
from agents.healing.logic.healing import (
    DEFAULT_ACTIONS,
    DEFAULT_TRIGGERS,
    ActionRegistry,
    HealingConfig,
    Observation,
    TriggerFramework,
    observation_from_metric,
    observations_from_executions,
)
from streams.records import MetricDataPoint

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def obs(**kw: object) -> Observation:
    return Observation.model_validate({"component": "checkout", "tenant_id": "acme", "timestamp": T0, **kw})


def test_seed_tables() -> None:
    trig = {t.name: (t.type, t.threshold, t.target_agent) for t in DEFAULT_TRIGGERS}
    assert trig == {
        "slow_tasks": ("bottleneck", 60.0, "ChiefArchitectAgent"),
        "high_retry_rate": ("bottleneck", 3.0, "AuditorAgent"),
        "high_error_rate": ("bottleneck", 0.20, "TestGeneratorAgent"),
        "token_usage_spike": ("cost", 3.0, "ChiefArchitectAgent"),
        "cost_efficiency_degradation": ("cost", 0.50, "PlannerAgent"),
        "test_failure_spike": ("quality", 0.05, "TestGeneratorAgent"),
        "duration_increase": ("performance", 1.5, "AuditorAgent"),
    }
    acts = {a.name: (a.priority, a.target_agent) for a in DEFAULT_ACTIONS}
    assert len(acts) == 8
    assert acts["handle_error_spike"] == ("emergency", "TestGeneratorAgent")
    assert acts["enforce_test_standards"] == ("critical", "TestGeneratorAgent")
    assert acts["adjust_cost_policies"] == ("medium", "PlannerAgent")
    assert acts["comprehensive_system_analysis"] == ("medium", "ChiefArchitectAgent")


@pytest.mark.parametrize(
    ("fields", "fires", "quiet"),
    [
        ({"duration_s": 60.0}, "slow_tasks", {"duration_s": 59.9}),
        ({"retries": 3}, "high_retry_rate", {"retries": 2}),
        ({"error_rate": 0.20}, "high_error_rate", {"error_rate": 0.19}),
        ({"tokens": 900, "baseline_tokens": 300}, "token_usage_spike", {"tokens": 899, "baseline_tokens": 300}),
        ({"cost_usd": 0.51}, "cost_efficiency_degradation", {"cost_usd": 0.50}),
        ({"test_failure_rate": 0.051}, "test_failure_spike", {"test_failure_rate": 0.05}),
        ({"duration_s": 15, "baseline_duration_s": 10}, "duration_increase",
         {"duration_s": 14.9, "baseline_duration_s": 10}),
    ],
)
def test_each_trigger_threshold(fields: dict[str, float], fires: str, quiet: dict[str, float]) -> None:
    fired = TriggerFramework().evaluate(obs(**fields), T0)
    assert [f.trigger for f in fired] == [fires]
    assert fired[0].evidence["observation"]["component"] == "checkout"
    assert TriggerFramework().evaluate(obs(**quiet), T0) == []


def test_cooldown_holds_sustained_condition() -> None:
    fw = TriggerFramework(HealingConfig(cooldown_seconds=300))
    times = [T0 + timedelta(seconds=60 * i) for i in range(11)]
    fired = [f for t in times for f in fw.evaluate(obs(duration_s=90, timestamp=t), t)]
    assert [f.timestamp for f in fired] == [times[0], times[5], times[10]]
    assert fw.fire_counts["slow_tasks"] == 3 and fw.suppressed["slow_tasks"] == 8
    other = fw.evaluate(obs(duration_s=90, component="search"), times[1])
    assert len(other) == 1  # cooldown is per (trigger, tenant, component)


def test_actions_and_comprehensive_analysis() -> None:
    fw, reg = TriggerFramework(), ActionRegistry()
    firings = fw.evaluate(obs(duration_s=120, retries=5, error_rate=0.5), T0)
    plans = reg.actions_for_all(firings)
    names = [p.action for p in plans]
    assert names == ["analyze_slow_tasks", "resolve_retry_failures", "handle_error_spike",
                     "comprehensive_system_analysis"]
    assert plans[2].priority == "emergency" and plans[2].handoff["to"] == "TestGeneratorAgent"
    assert plans[-1].handoff["triggers"] == ["high_error_rate", "high_retry_rate", "slow_tasks"]
    assert reg.actions_for(firings[0])[0].change_hint == {"kind": "timeout"}


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = HealingConfig.from_dict({"cooldown_seconds": 0, "triggers": {"slow_tasks": {"threshold": 120},
                                                                      "high_retry_rate": {"enabled": False}}})
    fw = TriggerFramework(cfg)
    assert fw.evaluate(obs(duration_s=90, retries=9), T0) == []
    assert [f.trigger for f in fw.evaluate(obs(duration_s=130), T0)] == ["slow_tasks"]
    with pytest.raises(ValueError, match="unknown healing config keys"):
        HealingConfig.from_dict({"cooldown": 1})
    path = tmp_path / "h.json"
    path.write_text('{"triggers": {"cost_efficiency_degradation": {"threshold": 1.0}}}')
    loaded = load_healing_config(environ={"KAIZEN_HEALING_CONFIG": str(path)})
    assert {t.name: t.threshold for t in loaded.triggers}["cost_efficiency_degradation"] == 1.0
    assert load_healing_config(environ={}).cooldown_seconds == 300
    path.write_text("{nope")
    with pytest.raises(ValueError, match="invalid healing config"):
        load_healing_config(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_healing_config(tmp_path / "missing.json")


def test_observations_from_cloudwatch_metrics() -> None:
    def point(name: str, value: float, unit: str = "None") -> MetricDataPoint:
        return MetricDataPoint(metric_name=name, value=value, unit=unit, timestamp=T0, tenant_id="acme",
                               dimensions={"FunctionName": "checkout"})

    lat = observation_from_metric(point("Duration", 75000, "Milliseconds"), baseline_duration_s=30)
    assert lat is not None and lat.duration_s == 75 and lat.component == "checkout"
    assert [f.trigger for f in TriggerFramework().evaluate(lat, T0)] == ["slow_tasks", "duration_increase"]
    err = observation_from_metric(point("ErrorRate", 25, "Percent"))
    assert err is not None and err.error_rate == 0.25
    assert observation_from_metric(point("CPUUtilization", 99)) is None


def test_observations_from_executions_rolling_error_rate() -> None:
    def em(i: int, ok: bool, tokens: int = 100) -> ExecutionMetrics:
        t = T0 + timedelta(minutes=i)
        return ExecutionMetrics(execution_id=f"e{i}", skill_name="s", timestamp_start=t, timestamp_end=t,
                                execution_succeeded=ok, total_latency_ms=1000, tokens_used=tokens)

    hist = [em(i, True) for i in range(20)]
    base = compute_baselines(hist)
    recs = [em(100 + i, i % 2 == 0, tokens=400 if i == 9 else 100) for i in range(10)]
    observations = observations_from_executions(recs, base)
    assert observations[0].error_rate is None and observations[4].error_rate == pytest.approx(0.4)
    fw = TriggerFramework()
    fired = {f.trigger for o in observations for f in fw.evaluate(o, o.timestamp)}
    assert fired == {"high_error_rate", "token_usage_spike"}


async def test_history_append_and_read(tmp_path: Path) -> None:
    hist = HealingHistory(tmp_path / "self_healing")
    fw, reg = TriggerFramework(HealingConfig(cooldown_seconds=0)), ActionRegistry()
    for day in range(2):
        t = T0 + timedelta(days=day)
        firings = fw.evaluate(obs(duration_s=90, timestamp=t), t)
        assert await hist.record_async(firings, reg.actions_for_all(firings))
    recs = hist.read()
    assert [(r.kind, r.name) for r in recs] == [("trigger", "slow_tasks"), ("action", "analyze_slow_tasks")] * 2
    assert len(hist.read(limit=1)) == 1 and hist.read(limit=1)[0].timestamp == T0 + timedelta(days=1)
    assert sorted(p.name for p in (tmp_path / "self_healing").iterdir())[0] == "actions-20260301.jsonl"
    assert [r.kind for r in hist.read(kind="action")] == ["action", "action"]
    assert HealingHistory(tmp_path / "none").read() == []


# --- the `kaizen healing` CLI --------------------------------------------------------------------

def _cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from streams.settings import get_settings

    monkeypatch.setenv("KAIZEN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KAIZEN_HEALING_CONFIG", raising=False)
    get_settings.cache_clear()
    return tmp_path


def test_cli_check_dry_run_and_the_topic_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a broker: check --dry-run evaluates a file; history/status/check need the group's topic and say so.
    (The topic path itself: tests/integration/test_healing.py.)"""
    import json

    from typer.testing import CliRunner

    from agents.healing.history import log_execution_metrics
    from kaizen.healing_cli import app

    data = _cli_env(tmp_path, monkeypatch)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    runner = CliRunner()
    try:
        for i in range(30):
            t = T0 + timedelta(minutes=i)
            log_execution_metrics(ExecutionMetrics(
                execution_id=f"e{i}", skill_name="deploy", timestamp_start=t, timestamp_end=t,
                execution_succeeded=True, total_latency_ms=90_000 if i == 29 else 2000, retries=4 if i == 10 else 0,
                cost_usd=0.01), data / "execution_metrics.jsonl")
        log = str(data / "execution_metrics.jsonl")
        res = runner.invoke(app, ["check", "--dry-run", "--input", log, "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["executions"] == 30 and out["dry_run"] is True
        assert sorted(f["trigger"] for f in out["firings"]) == ["duration_increase", "high_retry_rate", "slow_tasks"]
        assert {a["action"] for a in out["actions"]} >= {"analyze_slow_tasks", "resolve_retry_failures"}
        assert out["recorded"] == {"trigger": 0, "action": 0, "effect": 0}
        for cmd in (["history"], ["status"], ["check", "--input", log]):
            r = runner.invoke(app, cmd)
            assert r.exit_code == 2 and "KAFKA_BOOTSTRAP_SERVERS is not set" in r.output, (cmd, r.output)
        for cmd in (["triggers"], ["actions"], ["check", "--dry-run", "--input", log]):
            r = runner.invoke(app, cmd)
            assert r.exit_code == 0, (cmd, r.output)
        acts = json.loads(runner.invoke(app, ["actions", "--json"]).output)
        assert {a["name"]: a["effect"] for a in acts} == {
            "analyze_slow_tasks": "improvement_cycle", "resolve_retry_failures": "improvement_cycle",
            "handle_error_spike": "improvement_cycle", "optimize_token_usage": "policy_change",
            "adjust_cost_policies": "policy_change", "enforce_test_standards": "policy_change",
            "optimize_task_performance": "improvement_cycle", "comprehensive_system_analysis": "analysis_cycle"}
        assert {a["role"] for a in acts} == {"chief_architect", "auditor", "test_generator", "planner"}
        assert len(json.loads(runner.invoke(app, ["triggers", "--json"]).output)) == 7
    finally:
        from streams.settings import get_settings

        get_settings.cache_clear()


def test_cli_bad_arguments_say_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from kaizen.healing_cli import app

    _cli_env(tmp_path, monkeypatch)
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["check", "--dry-run", "--input", str(tmp_path / "nope.jsonl")])
        assert r.exit_code == 2 and "pass --input FILE.jsonl" in r.output
        r = runner.invoke(app, ["history", "--limit", "0"])
        assert r.exit_code == 2 and "--limit" in r.output
        r = runner.invoke(app, ["history", "--kind", "x"])
        assert r.exit_code == 2 and "must be 'trigger', 'action' or 'effect'" in r.output
        bad = tmp_path / "bad.json"
        bad.write_text('{"triggers": {"slow_tasks": {"threshold": "soon"}}}')
        r = runner.invoke(app, ["triggers", "--config", str(bad)])
        assert r.exit_code == 2 and "invalid healing config" in r.output
    finally:
        from streams.settings import get_settings

        get_settings.cache_clear()


def test_quick_gate_agrees_with_the_triggers() -> None:
    import random

    from agents.healing.logic.healing import metric_observation_fields

    rng = random.Random(11)
    names = ["Duration", "Latency", "ErrorRate", "TestFailureRate", "Retries", "TokensUsed", "CostUSD"]
    fired = 0
    for i in range(3000):
        name = rng.choice(names)
        value = rng.choice([rng.uniform(0, 5), rng.uniform(0, 200), rng.uniform(0, 200_000)])
        unit = rng.choice(["Milliseconds", "Seconds", "Percent", "Count"])
        fields = metric_observation_fields(name, value, unit, rng.choice([None, rng.uniform(0.01, 120)]))
        assert fields is not None
        tf = TriggerFramework()  # fresh: no cooldown in the way
        want = bool(tf.evaluate(obs(**fields), T0 + timedelta(seconds=i)))
        assert tf.may_fire(fields) == want, (name, value, unit, fields)
        fired += want
    assert 100 < fired < 2900  # both outcomes exercised
