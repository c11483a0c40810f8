"""Who may approve / reject / defer: one rule (streams/decisions.py), and MCP and the worker agree on it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.improvement.logic.decisions import DECISION_EVENTS, decision_events
from agents.improvement.logic.lifecycle import allowed, fold
from mcp_server.auth import AuthError, Principal
from mcp_server.service import BadArgument, KaizenService
from mcp_server.views import Views
from streams import topics as T
from streams.commands import DECISION_KINDS, Decision
from streams.decisions import DECIDABLE, refusal
from streams.records import ImprovementEvent, ImprovementExecution, ImprovementOpportunity

NOW = datetime.now(UTC)
TENANT = "acme"
STATUSES = ("pending", "queued", "validating", "awaiting_approval", "deferred", "monitoring", "completed")
PRINCIPALS = {
    "reader": Principal("rita", frozenset({TENANT}), frozenset({"reader"})),
    "operator": Principal("olga", frozenset({TENANT}), frozenset({"operator"})),
    "approver": Principal("bob", frozenset({TENANT}), frozenset({"approver"})),
    "requester": Principal("alice", frozenset({TENANT}), frozenset({"approver"})),  # requested every improvement
    "admin": Principal("root", None, frozenset({"admin"})),
}


def test_the_rule() -> None:
    def why(decision: Any, roles: list[str], actor: str = "bob", status: str = "awaiting_approval",
            system_wide: bool = False, all_tenants: bool = False) -> str | None:
        r = refusal(decision, actor=actor, roles=roles, all_tenants=all_tenants, requested_by="alice",
                    status=status, system_wide=system_wide)
        return None if r is None else r.message

    assert why("approve", ["approver"]) is None and why("approve", ["admin"]) is None
    assert "needs role approver" in str(why("approve", ["operator"]))
    assert why("defer", ["operator"]) is None  # an operator may defer ...
    assert "needs role operator" in str(why("defer", ["reader"]))  # ... a reader may not
    assert "four eyes" in str(why("approve", ["approver"], actor="alice"))
    assert why("reject", ["approver"], actor="alice") is None  # stopping one's own change is allowed
    assert "system-wide" in str(why("approve", ["approver"], system_wide=True))
    assert why("approve", ["admin"], system_wide=True, all_tenants=True) is None
    assert "status 'monitoring'" in str(why("reject", ["approver"], status="monitoring"))
    assert "needs a named principal" in str(why("defer", ["admin"], actor=""))


def _execution(status: str, system_wide: bool = False) -> ImprovementExecution:
    opp = ImprovementOpportunity.model_validate(dict(
        opportunity_id="o1", title="t", description="d", tenant_id=TENANT, problem_type="latency",
        affected_components=["api"], first_seen=NOW, last_seen=NOW, scope="system" if system_wide else "tenant"))
    history = [ImprovementEvent(event_id=f"imp:{status}:{i}", improvement_id="imp", status="pending",
                                timestamp=NOW) for i in range(2)]
    return ImprovementExecution(improvement_id="imp", opportunity=opp, status=status,  # type: ignore[arg-type]
                                tenant_id=TENANT, requested_by="alice", history=history, created_at=NOW)


@pytest.mark.parametrize("decision", DECISION_KINDS)
def test_every_decidable_status_leads_to_transitions_the_lifecycle_allows(decision: Any) -> None:
    assert set(DECISION_EVENTS) == set(DECISION_KINDS)
    for status in DECIDABLE[decision]:
        ex = _execution(status)
        cmd = Decision(command_id="c", kind=decision, timestamp=NOW, actor="bob", roles=["approver"],
                       improvement_id="imp")
        for ev in decision_events(cmd, ex, NOW):
            assert allowed(ex.status, ev.status), (decision, ex.status, ev.status)
            ex = fold(ex, ev)


class _Publisher:
    def __init__(self) -> None:
        self.commands: list[Any] = []

    async def command(self, cmd: Any) -> None:
        self.commands.append(cmd)

    async def audit(self, *args: Any, **kwargs: Any) -> None:
        return None


def _mcp(ex: ImprovementExecution) -> KaizenService:
    views = Views()
    views.apply(T.IMPROVEMENT_STATE, ex.improvement_id.encode(), ex.to_bytes())
    svc = KaizenService.__new__(KaizenService)
    svc.readmodel = SimpleNamespace(views=views)  # type: ignore[assignment]
    svc.publisher = _Publisher()  # type: ignore[assignment]
    return svc


async def test_mcp_and_worker_agree_on_every_decision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """For each principal x status x decision (x scope): MCP accepts exactly when the worker applies it."""
    from agents.improvement import cycle
    from streams import app as A
    from streams.testing import AgentHarness

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    monkeypatch.setattr(cycle, "DECISION_WAIT_SECONDS", 0.0)
    outcomes: dict[tuple[str, str, str, bool], bool] = {}
    for (who, p), status, decision, system_wide in itertools.product(
            PRINCIPALS.items(), STATUSES, DECISION_KINDS, (False, True)):
        ex = _execution(status, system_wide)
        svc = _mcp(ex)
        try:
            await svc.decide(p, decision, "imp", "because")
            mcp_accepts = True
            [cmd] = svc.publisher.commands  # type: ignore[attr-defined]
        except (AuthError, BadArgument):
            mcp_accepts = False
            cmd = Decision(command_id="c", kind=decision, timestamp=NOW, actor=p.name, roles=sorted(p.roles),
                           tenant_id=TENANT, improvement_id="imp", reason="because", all_tenants=p.all_tenants)

        async def ctx(ex: ImprovementExecution = ex) -> Any:
            return SimpleNamespace(views=SimpleNamespace(improvements={"imp": ex}))

        monkeypatch.setattr(cycle, "step_context", ctx)
        async with AgentHarness() as h:
            await cycle.decide(cmd)
            events = h.records(T.IMPROVEMENT_EVENTS, ImprovementEvent)
        worker_applies = bool(events)
        assert mcp_accepts == worker_applies, (who, status, decision, system_wide, mcp_accepts)
        outcomes[(who, status, decision, system_wide)] = mcp_accepts
    # the cases issue reports were about, and the rule's shape
    assert outcomes[("operator", "awaiting_approval", "defer", False)] is True
    assert outcomes[("operator", "awaiting_approval", "approve", False)] is False
    assert outcomes[("requester", "awaiting_approval", "approve", False)] is False
    assert outcomes[("requester", "awaiting_approval", "reject", False)] is True
    assert outcomes[("approver", "awaiting_approval", "approve", True)] is False
    assert outcomes[("admin", "awaiting_approval", "approve", True)] is True
    assert outcomes[("admin", "deferred", "approve", False)] is True
    assert outcomes[("admin", "pending", "defer", False)] is False
    assert not any(v for (who, *_), v in outcomes.items() if who == "reader")
    assert sum(outcomes.values()) >= 20


def test_the_resolve_conflict_rule() -> None:
    def why(roles: list[str], actor: str = "bob", status: str = "conflict", system_wide: bool = False,
            all_tenants: bool = False) -> str | None:
        r = refusal("resolve_conflict", actor=actor, roles=roles, all_tenants=all_tenants, requested_by="alice",
                    status=status, system_wide=system_wide)
        return None if r is None else r.message

    assert why(["approver"]) is None and why(["admin"]) is None
    assert why(["approver"], actor="alice") is None  # the requester may resolve: it restores or keeps, never deploys
    assert "may not resolve the conflict of an improvement: needs role approver" in str(why(["operator"]))
    assert "system-wide" in str(why(["approver"], system_wide=True))
    assert why(["admin"], system_wide=True, all_tenants=True) is None
    assert "cannot resolve the conflict of the improvement in status 'monitoring'" in str(
        why(["admin"], status="monitoring"))


async def test_mcp_and_worker_agree_on_resolving_a_conflict(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """For each principal x status x action (x scope): MCP accepts exactly when the worker applies it, and
    what it applies is a transition the lifecycle allows (retry -> rolling_back, keep -> rejected)."""
    from agents.improvement import cycle
    from streams import app as A
    from streams.commands import RESOLVE_ACTIONS, ResolveConflict
    from streams.testing import AgentHarness

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    monkeypatch.setattr(cycle, "DECISION_WAIT_SECONDS", 0.0)
    outcomes: dict[tuple[str, str, str, bool], str | None] = {}
    for (who, p), status, action, system_wide in itertools.product(
            PRINCIPALS.items(), ("conflict", "monitoring", "rolling_back", "failed"), RESOLVE_ACTIONS, (False, True)):
        ex = _execution(status, system_wide)
        svc = _mcp(ex)
        try:
            res = await svc.resolve_conflict(p, "imp", action, "put back by hand")
            mcp_accepts = True
            [cmd] = svc.publisher.commands  # type: ignore[attr-defined]
            assert res.decision == "resolve_conflict" and res.action == action
        except (AuthError, BadArgument):
            mcp_accepts = False
            cmd = ResolveConflict(command_id="c", timestamp=NOW, actor=p.name, roles=sorted(p.roles),
                                  tenant_id=TENANT, improvement_id="imp", action=action, reason="r",
                                  all_tenants=p.all_tenants)

        async def ctx(ex: ImprovementExecution = ex) -> Any:
            return SimpleNamespace(views=SimpleNamespace(improvements={"imp": ex}))

        monkeypatch.setattr(cycle, "step_context", ctx)
        async with AgentHarness() as h:
            await cycle.HANDLERS[ResolveConflict](cmd)
            events = h.records(T.IMPROVEMENT_EVENTS, ImprovementEvent)
        assert mcp_accepts == bool(events), (who, status, action, system_wide, mcp_accepts)
        for ev in events:
            assert allowed(ex.status, ev.status) and ev.actor == p.name, (ex.status, ev.status)
            assert ev.data["resolution"] == {"action": action, "by": p.name, "command_id": cmd.command_id}
            ex = fold(ex, ev)
        outcomes[(who, status, action, system_wide)] = events[-1].status if events else None
    assert outcomes[("approver", "conflict", "retry_rollback", False)] == "rolling_back"
    assert outcomes[("approver", "conflict", "keep_current", False)] == "rejected"
    assert outcomes[("requester", "conflict", "retry_rollback", False)] == "rolling_back"
    assert outcomes[("operator", "conflict", "retry_rollback", False)] is None
    assert outcomes[("approver", "conflict", "retry_rollback", True)] is None  # system-wide: all-tenant only
    assert outcomes[("admin", "conflict", "keep_current", True)] == "rejected"
    assert not any(v for (_w, status, *_), v in outcomes.items() if status != "conflict")
    assert not any(v for (who, *_), v in outcomes.items() if who in ("reader", "operator"))


async def test_mcp_refuses_a_bad_resolution_with_a_reason() -> None:
    svc = _mcp(_execution("conflict"))
    with pytest.raises(BadArgument, match="action must be one of"):
        await svc.resolve_conflict(PRINCIPALS["approver"], "imp", "overwrite", "x")
    with pytest.raises(BadArgument, match="keep_current needs a reason"):
        await svc.resolve_conflict(PRINCIPALS["approver"], "imp", "keep_current", " ")
    with pytest.raises(BadArgument, match="not found"):
        await svc.resolve_conflict(PRINCIPALS["approver"], "imp-unknown", "retry_rollback", "")
