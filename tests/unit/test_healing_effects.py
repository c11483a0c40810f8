"""Every healing action's effect inside kaizen, the cooldown store across workers, the policies' readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents.healing.history import history_lines
from agents.healing.logic.effects import EFFECTS, effect_for, role_of
from agents.healing.logic.execution_metrics import ExecutionMetrics
from agents.healing.logic.execution_observer import ExecutionObserver, kaizen_execution
from agents.healing.logic.healing import (
    ActionPlan,
    ActionRegistry,
    HealingConfig,
    HealingRecord,
    Observation,
    TriggerFiring,
    TriggerFramework,
)
from agents.healing.logic.policies import (
    COST_POLICY_KEY,
    MIN_TOKEN_BUDGET,
    STRICTNESS_KEY,
    TOKEN_BUDGET_KEY,
    effective_max_tokens,
    strict_validation,
)
from agents.improvement.logic.playbooks import plan
from streams.records import ImprovementOpportunity

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
LLM_MAX = 4000


def obs(**kw: Any) -> Observation:
    return Observation.model_validate({"component": "checkout", "tenant_id": "acme", "timestamp": T0, **kw})


def fire(**fields: Any) -> tuple[TriggerFiring, list[ActionPlan]]:
    """One firing of a fresh framework (tenant acme unless tenant_id= is given)."""
    firings = TriggerFramework().evaluate(obs(**fields), T0)
    assert len(firings) == 1, firings
    return firings[0], ActionRegistry().actions_for_all(firings)


def cycle_effect(fields: dict[str, Any], action: str) -> tuple[TriggerFiring, Any]:
    firing, plans = fire(**fields)
    assert [p.action for p in plans] == [action]
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "improvement_cycle" and eff.command is not None
    cmd = eff.command
    assert cmd["kind"] == "trigger_cycle" and cmd["tenant_id"] == "acme"
    assert cmd["actor"] == f"healing:{eff.role}" and not {"approver", "admin"} & set(cmd["roles"])
    args = cmd["args"]
    assert args["component"] == "checkout" and args["max_improvements"] == 1
    assert args["healing"]["firing_id"] == firing.firing_id and args["healing"]["action"] == action
    opp = ImprovementOpportunity.model_validate(args["opportunity"])
    assert opp.affected_components == ["checkout"] and opp.problem_type == args["problem_type"]
    assert opp.telemetry_evidence[0].evidence["firing_id"] == firing.firing_id
    assert opp.proposed_changes["change_hint"] == plans[0].change_hint
    # the offline planner has a bounded plan for it: the cycle can propose a real change
    assert plan(opp, {}).changes, opp.problem_type
    return firing, eff


def test_analyze_slow_tasks_starts_a_focused_latency_cycle() -> None:
    _, eff = cycle_effect({"duration_s": 75.0}, "analyze_slow_tasks")
    assert eff.command["args"]["problem_type"] == "latency" and eff.role == "chief_architect"
    assert eff.command["args"]["cycle_kind"] == "manual"


def test_resolve_retry_failures_starts_a_focused_error_rate_cycle() -> None:
    _, eff = cycle_effect({"retries": 4.0}, "resolve_retry_failures")
    assert eff.command["args"]["problem_type"] == "error_rate" and eff.role == "auditor"
    assert eff.command["args"]["change_hint"] == {"kind": "retries"}


def test_handle_error_spike_starts_an_emergency_cycle() -> None:
    _, eff = cycle_effect({"error_rate": 0.35}, "handle_error_spike")
    assert eff.command["args"]["cycle_kind"] == "emergency" and eff.role == "test_generator"


def test_optimize_task_performance_starts_a_focused_latency_cycle() -> None:
    _, eff = cycle_effect({"duration_s": 3.0, "baseline_duration_s": 1.0}, "optimize_task_performance")
    assert eff.command["args"]["problem_type"] == "latency" and eff.role == "auditor"


@pytest.mark.parametrize(("tenant", "component"), [
    ("kaizen", "connector:metrics:payments"),  # kaizen's own connector polls
    ("kaizen", "connector:logs:/kaizen/demo/*"),
    ("kaizen", "llm:bedrock"),
    ("acme", "arn:aws:lambda:eu-west-1:123456789012:function:checkout"),  # a monitored one named by an ARN
])
def test_a_component_that_cannot_name_a_target_gets_no_cycle(tenant: str, component: str) -> None:
    firing, plans = fire(duration_s=3.0, baseline_duration_s=1.0, tenant_id=tenant, component=component)
    assert [p.action for p in plans] == ["optimize_task_performance"]
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "no_target" and eff.command is None and eff.config_key is None
    assert eff.summary.startswith("no cycle: component ") and "no target" in eff.summary
    line = eff.history_record()  # the firing's history says why nothing was started
    assert line["effect"] == "no_target" and line["firing_id"] == firing.firing_id and "command_id" not in line


def test_kaizen_steps_keep_their_focused_cycle_and_policies_stay_for_every_name() -> None:
    firing, plans = fire(duration_s=3.0, baseline_duration_s=1.0, tenant_id="kaizen",
                         component="improvement.generating")
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "improvement_cycle" and eff.command is not None
    firing, plans = fire(tokens=9000.0, baseline_tokens=1000.0, tenant_id="kaizen", component="llm:bedrock")
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "policy_change" and eff.config_key == TOKEN_BUDGET_KEY


def test_optimize_token_usage_halves_the_llm_token_budget_which_the_generator_reads() -> None:
    firing, plans = fire(tokens=9000.0, baseline_tokens=1000.0, tenant_id="kaizen", component="llm:bedrock")
    assert [p.action for p in plans] == ["optimize_token_usage"]
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "policy_change" and eff.config_key == TOKEN_BUDGET_KEY
    assert eff.config_value is not None and eff.config_value["max_tokens"] == LLM_MAX // 2
    assert eff.config_value["healing"]["firing_id"] == firing.firing_id
    config = {TOKEN_BUDGET_KEY: eff.config_value}
    assert effective_max_tokens(config, LLM_MAX, "offline", NOW) == LLM_MAX // 2
    again = effect_for(plans[0], firing, NOW, config, LLM_MAX, 3)  # a later firing halves again
    assert again is not None and again.config_value is not None and again.config_value["max_tokens"] == LLM_MAX // 4
    floor = {TOKEN_BUDGET_KEY: {"max_tokens": MIN_TOKEN_BUDGET, "expires_at": NOW.timestamp() + 60}}
    low = effect_for(plans[0], firing, NOW, floor, LLM_MAX, 3)
    assert low is not None and low.config_value is not None and low.config_value["max_tokens"] == MIN_TOKEN_BUDGET
    expired = NOW + timedelta(hours=7)
    assert effective_max_tokens(config, LLM_MAX, "offline", expired) == LLM_MAX
    # a monitored service's token spike sets that tenant's budget, for its services: kaizen's LLM is untouched
    s_firing, s_plans = fire(tokens=9000.0, baseline_tokens=1000.0)
    svc = effect_for(s_plans[0], s_firing, NOW, {}, LLM_MAX, 3)
    assert svc is not None and svc.config_key == f"acme/{TOKEN_BUDGET_KEY}"
    assert effective_max_tokens({svc.config_key: svc.config_value}, LLM_MAX, "offline", NOW) == LLM_MAX


def test_adjust_cost_policies_caps_the_cost_of_an_llm_call() -> None:
    firing, plans = fire(cost_usd=0.9, tenant_id="kaizen", component="llm:openai")
    assert [p.action for p in plans] == ["adjust_cost_policies"]
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.config_key == COST_POLICY_KEY and eff.role == "planner"
    assert eff.config_value is not None and eff.config_value["max_cost_usd_per_call"] == 0.5
    config = {COST_POLICY_KEY: eff.config_value}
    # gpt-4 output costs $0.06 / 1K tokens: $0.50 buys 8333 tokens, more than 4000 (no cut); $0.06 buys 1000
    assert effective_max_tokens(config, LLM_MAX, "gpt-4", NOW) == LLM_MAX
    config[COST_POLICY_KEY] = {**eff.config_value, "max_cost_usd_per_call": 0.06}
    assert effective_max_tokens(config, LLM_MAX, "gpt-4", NOW) == 1000
    assert effective_max_tokens(config, LLM_MAX, "unpriced-model", NOW) == LLM_MAX
    s_firing, s_plans = fire(cost_usd=0.9)
    svc = effect_for(s_plans[0], s_firing, NOW, {}, LLM_MAX, 3)
    assert svc is not None and svc.config_key == f"acme/{COST_POLICY_KEY}"


def test_enforce_test_standards_makes_validation_strict() -> None:
    firing, plans = fire(test_failure_rate=0.2)
    assert [p.action for p in plans] == ["enforce_test_standards"]
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.config_key == f"acme/{STRICTNESS_KEY}" and eff.role == "test_generator"
    config = {eff.config_key: eff.config_value}
    assert strict_validation(config, NOW, "acme") and not strict_validation({}, NOW, "acme")
    assert not strict_validation(config, NOW, "other") and not strict_validation(config, NOW)
    assert not strict_validation(config, NOW + timedelta(hours=7), "acme")
    own, own_plans = fire(test_failure_rate=0.2, tenant_id="kaizen", component="improvement.validating")
    kz = effect_for(own_plans[0], own, NOW, {}, LLM_MAX, 3)
    assert kz is not None and kz.config_key == STRICTNESS_KEY
    assert strict_validation({STRICTNESS_KEY: kz.config_value}, NOW, "other")  # kaizen-wide


def test_comprehensive_system_analysis_starts_a_system_wide_cycle_after_three_triggers() -> None:
    fw, reg = TriggerFramework(), ActionRegistry()
    cooldowns: dict[str, float] = {}
    seen: list[ActionPlan] = []
    firings: list[TriggerFiring] = []
    for i, fields in enumerate(({"duration_s": 90.0}, {"retries": 5.0}, {"error_rate": 0.5})):
        at = T0 + timedelta(seconds=i)
        fs = fw.evaluate(obs(timestamp=at, **fields), at, cooldowns)
        due = fw.comprehensive_due(cooldowns, "acme", "checkout", at)
        seen += reg.actions_for_all(fs, {("acme", "checkout"): due})
        firings += fs
    diag = [p for p in seen if p.action == "comprehensive_system_analysis"]
    assert len(diag) == 1 and diag[0].handoff["triggers"] == ["high_error_rate", "high_retry_rate", "slow_tasks"]
    eff = effect_for(diag[0], firings[-1], NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.kind == "analysis_cycle" and eff.command is not None
    assert eff.command["tenant_id"] is None and eff.command["args"]["max_improvements"] == 3
    assert "component" not in eff.command["args"] and eff.role == "chief_architect"
    # a fourth trigger inside the cooldown does not start another analysis
    at = T0 + timedelta(seconds=5)
    fw.evaluate(obs(timestamp=at, test_failure_rate=0.5), at, cooldowns)
    assert fw.comprehensive_due(cooldowns, "acme", "checkout", at) == []


def test_every_default_action_has_an_effect_and_every_agent_a_role() -> None:
    cfg = HealingConfig()
    assert {a.name for a in cfg.actions} == set(EFFECTS)
    assert {role_of(t.target_agent) for t in cfg.triggers} == {"chief_architect", "auditor", "test_generator",
                                                                "planner"}


class FakeStore:
    """The ChangelogStore interface: state per partition, deltas appended to a shared changelog."""

    def __init__(self, changelog: list[tuple[int, dict[str, Any]]]) -> None:
        self.changelog = changelog
        self.states: dict[int, dict[str, Any]] = {}

    async def state(self, partition: int) -> dict[str, Any]:
        if partition not in self.states:  # rebuilt from the changelog, as after a rebalance
            st: dict[str, Any] = {}
            for p, delta in self.changelog:
                if p == partition:
                    st.update(delta.get("set", {}))
            self.states[partition] = st
        return self.states[partition]

    async def record(self, partition: int, delta: dict[str, Any], wait: bool = False) -> None:
        (await self.state(partition)).update(delta.get("set", {}))
        self.changelog.append((partition, delta))


async def test_cooldown_holds_across_workers_through_the_changelog() -> None:
    from agents.healing.agent import Evaluator

    changelog: list[tuple[int, dict[str, Any]]] = []
    cfg = HealingConfig()
    first = Evaluator(FakeStore(changelog), cfg)  # type: ignore[arg-type]
    firings, plans = await first.decide(2, obs(retries=4.0))
    assert [f.trigger for f in firings] == ["high_retry_rate"] and [p.action for p in plans] == [
        "resolve_retry_failures"]
    # the partition moves to another worker: its cooldown comes with the changelog
    second = Evaluator(FakeStore(changelog), cfg)  # type: ignore[arg-type]
    later = T0 + timedelta(seconds=60)
    assert await second.decide(2, obs(retries=6.0, timestamp=later)) == ([], [])
    after = T0 + timedelta(seconds=cfg.cooldown_seconds + 1)
    again, _ = await second.decide(2, obs(retries=6.0, timestamp=after))
    assert [f.trigger for f in again] == ["high_retry_rate"]


def test_history_lines_link_effects_to_their_firing() -> None:
    firing, plans = fire(retries=4.0)
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None
    lines = history_lines([firing], plans, [eff], NOW)
    recs = [HealingRecord.model_validate_json(v) for _, v in lines]
    assert [r.kind for r in recs] == ["trigger", "action", "effect"]
    assert {k.decode() for k, _ in lines} == {firing.firing_id}
    assert all(r.detail["firing_id"] == firing.firing_id for r in recs)
    assert recs[2].detail["cycle_id"] == eff.command["args"]["cycle_id"]  # type: ignore[index]


def _em(i: int, **kw: Any) -> ExecutionMetrics:
    t = T0 + timedelta(seconds=i)
    base: dict[str, Any] = {"execution_id": f"e{i}", "skill_name": "llm:bedrock", "timestamp_start": t,
                            "timestamp_end": t, "execution_succeeded": True, "total_latency_ms": 800,
                            "tokens_used": 1000}
    return ExecutionMetrics.model_validate({**base, **kw})


def test_execution_observer_gives_the_triggers_their_fields() -> None:
    eo = ExecutionObserver(min_baseline=20)
    fw = TriggerFramework()
    fired: list[str] = []
    for i in range(25):
        o, _ = eo.observe(_em(i))
        fired += [f.trigger for f in fw.evaluate(o, o.timestamp)]
    assert fired == []
    o, base = eo.observe(_em(30, tokens_used=4000, retries=3))
    assert base is not None and base.avg_tokens_per_execution == 1000
    assert sorted(f.trigger for f in fw.evaluate(o, o.timestamp)) == ["high_retry_rate", "token_usage_spike"]
    for i in range(31, 36):
        o, _ = eo.observe(_em(i, execution_succeeded=False))
    assert o.error_rate is not None and o.error_rate >= 0.2


def test_kaizen_execution_prices_llm_calls() -> None:
    em = kaizen_execution("llm:openai", T0, T0 + timedelta(milliseconds=1500), True, execution_id="x",
                          tokens_input=1000, tokens_output=1000, model="gpt-4")
    assert em.tenant_id == "kaizen" and em.total_latency_ms == 1500 and em.tokens_used == 2000
    assert em.cost_usd == pytest.approx(0.09)
    free = kaizen_execution("improvement.validating", T0, T0, False, execution_id="y", error="boom")
    assert free.cost_usd == 0.0 and free.execution_failed


async def test_the_generator_reads_the_llm_policies_and_records_each_call() -> None:
    from agents.improvement.generator import CodeGenerator
    from connectors.llm.base import LLMProvider, LLMResponse

    class Spy(LLMProvider):
        name, model = "spy", "gpt-4"

        def __init__(self) -> None:
            self.asked: list[int] = []

        async def generate(self, prompt: str, max_tokens: int = 4000, temperature: float = 0.1) -> LLMResponse:
            self.asked.append(max_tokens)
            return LLMResponse("x", 10, 20, self.model, 0.0021)

    spy = Spy()
    gen = CodeGenerator(spy, max_tokens=LLM_MAX)
    future = datetime.now(UTC).timestamp() + 600
    config: dict[str, Any] = {}
    gen.policy = lambda: config
    calls: list[tuple[str, bool, dict[str, Any]]] = []

    async def on_call(skill: str, started: datetime, ok: bool, **kw: Any) -> None:
        calls.append((skill, ok, kw))

    gen.on_call = on_call
    await gen.generate("p")
    config[TOKEN_BUDGET_KEY] = {"max_tokens": 1000, "expires_at": future}
    await gen.generate("p")
    config[COST_POLICY_KEY] = {"max_cost_usd_per_call": 0.03, "expires_at": future}  # 500 gpt-4 output tokens
    await gen.generate("p")
    assert spy.asked == [LLM_MAX, 1000, 500]
    assert [(s, ok) for s, ok, _ in calls] == [("llm:spy", True)] * 3
    assert calls[0][2]["tokens_input"] == 10 and calls[0][2]["tokens_output"] == 20
    assert calls[0][2]["cost_usd"] == 0.0021 and calls[0][2]["model"] == "gpt-4"


async def test_strict_validation_stops_auto_approval_in_the_validating_step() -> None:
    from types import SimpleNamespace

    from agents.improvement.steps import StepContext, step_validating
    from streams.records import ImprovementExecution
    from streams.settings import Settings

    firing, plans = fire(retries=4.0)
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.command is not None
    opp = ImprovementOpportunity.model_validate(eff.command["args"]["opportunity"])
    p = plan(opp, {})
    ex = ImprovementExecution(improvement_id="imp-1", opportunity=opp, status="validating", tenant_id="acme",
                              plan=p.as_dict())
    views = SimpleNamespace(config={}, improvements={}, flags={"enable_autonomous_improvements": True})
    tap = SimpleNamespace(window=lambda *a, **k: [])
    ctx = StepContext(Settings(), views, tap, None, None, None, clock=lambda: NOW)  # type: ignore[arg-type]
    auto = await step_validating(ctx, ex)
    assert [e.status for e in auto] == ["deploying"], [e.reason for e in auto]
    t_firing, t_plans = fire(test_failure_rate=0.3)
    policy = effect_for(t_plans[0], t_firing, NOW, {}, LLM_MAX, 3)
    assert policy is not None and policy.config_key is not None
    views.config[policy.config_key] = policy.config_value
    held = await step_validating(ctx, ex)
    assert [e.status for e in held] == ["awaiting_approval"]
    assert "strict validation" in held[0].reason


async def test_the_metric_side_forwards_threshold_crossings_once_per_series_and_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.healing import agent as H

    sent: list[Observation] = []

    async def fake_forward(o: Observation) -> None:
        sent.append(o)

    monkeypatch.setattr(H, "forward", fake_forward)
    h = H.Healing(HealingConfig())
    t = T0.timestamp()

    def pt(name: str, value: float, at: float, unit: str = "Count") -> Any:
        return {"metric_name": name, "value": value, "unit": unit, "tenant_id": "acme", "component": "checkout",
                "timestamp": at, "event_id": f"m-{name}-{at}"}

    n = await h.observe([pt("Retries", 1.0, t), pt("Retries", 4.0, t + 0.1), pt("Retries", 5.0, t + 0.5),
                         pt("Duration", 70_000.0, t + 0.6, "Milliseconds"), pt("Retries", 6.0, t + 1.2),
                         pt("RequestCount", 9e9, t + 2)])
    assert n == 3 and [(o.retries, o.duration_s) for o in sent] == [(4.0, None), (None, 70.0), (6.0, None)]
    assert sent[0].source == "cloudwatch" and sent[0].ref == f"m-Retries-{t + 0.1}"


def test_the_retries_hint_keeps_the_plan_from_adding_retries() -> None:
    firing, plans = fire(retries=4.0)
    eff = effect_for(plans[0], firing, NOW, {}, LLM_MAX, 3)
    assert eff is not None and eff.command is not None
    opp = ImprovementOpportunity.model_validate(eff.command["args"]["opportunity"])
    hinted = {c.parameter for c in plan(opp, {}).changes}
    plain = {c.parameter for c in plan(opp.model_copy(update={"proposed_changes": {}}), {}).changes}
    assert "max_retries" in plain and "max_retries" not in hinted
    assert "feature_flags.circuit_breaker" in hinted
