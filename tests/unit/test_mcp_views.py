"""The read model's views: ranking, timelines, tombstones, bad records (pure: no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mcp_server.views import Views
from streams import topics as t
from streams.records import ImprovementEvent, ImprovementOpportunity

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _opp(oid: str, severity: str, score: float, risk: str = "medium", priority: str = "high") -> bytes:
    return ImprovementOpportunity.model_validate(dict(
        opportunity_id=oid, title=oid, description=oid, impact_score=score, severity=severity, risk_level=risk,
        priority=priority, tenant_id="t1", problem_type="latency", first_seen=NOW, last_seen=NOW)).to_bytes()


def test_ranking_critical_first_then_score_then_risk() -> None:
    v = Views()
    for oid, sev, score, risk in [("a", "high", 5000, "medium"), ("b", "critical", 10, "high"),
                                  ("c", "medium", 6000, "high"), ("d", "medium", 6000, "low")]:
        v.apply(t.OPPORTUNITIES, oid.encode(), _opp(oid, sev, score, risk))
    assert [o.opportunity_id for o in v.ranking()] == ["b", "d", "c", "a"]
    v.apply(t.OPPORTUNITIES, b"a", _opp("a", "high", 7000))  # an update replaces, never duplicates
    assert [o.opportunity_id for o in v.ranking()] == ["b", "a", "d", "c"], "the cached ranking follows updates"
    v.apply(t.OPPORTUNITIES, b"b", None)  # tombstone
    assert "b" not in v.opportunities
    assert [o.opportunity_id for o in v.ranking()] == ["a", "d", "c"], "and tombstones"


def test_timeline_fold_dedup_and_bad_records() -> None:
    v = Views()
    for i, status in enumerate(["pending", "deploying", "rolled_back", "deploying"]):
        ev = ImprovementEvent(event_id=f"e{min(i, 2)}" if i < 3 else "e1", improvement_id="imp", status=status,  # type: ignore[arg-type]
                              timestamp=NOW + timedelta(seconds=i), tenant_id="t1")
        v.apply(t.IMPROVEMENT_EVENTS, b"imp", ev.to_bytes())
    ex = v.execution("imp")
    assert ex is not None and ex.status == "rolled_back" and ex.tenant_id == "t1"
    assert [e.event_id for e in v.timeline("imp")] == ["e0", "e1", "e2"]
    v.apply(t.OPPORTUNITIES, b"x", b"{not json")
    v.apply(t.SERIES, b"s", b"[1, 2]")
    assert v.decode_errors == {t.OPPORTUNITIES: 1, t.SERIES: 1} and "x" not in v.opportunities


def test_list_opportunities_pages_the_callers_part_of_the_ranking() -> None:
    import random

    from mcp_server.auth import Principal
    from mcp_server.service import KaizenService
    from mcp_server.views import PRIORITY_RANK, opportunity_rank_key

    rng = random.Random(3)
    v = Views()
    for i in range(300):
        sev = rng.choice(["critical", "high", "medium", "low"])
        o = ImprovementOpportunity.model_validate(dict(
            opportunity_id=f"o{i}", title="t", description="d", impact_score=rng.uniform(0, 9000), severity=sev,
            priority=rng.choice(list(PRIORITY_RANK)), tenant_id=f"t{i % 5}", problem_type="latency",
            first_seen=NOW, last_seen=NOW))
        v.apply(t.OPPORTUNITIES, o.opportunity_id.encode(), o.to_bytes())

    class _ReadModel:
        views = v

    svc = KaizenService.__new__(KaizenService)
    svc.readmodel = _ReadModel()  # type: ignore[assignment]
    svc.settings = type("S", (), {"cloudwatch_tenant_filter": [], "tenant_improvement_configs": {}})()  # type: ignore[assignment]
    for tenants, tenant_arg, prio in [(None, None, None), (frozenset({"t1", "t3"}), None, None),
                                      (frozenset({"t1", "t3"}), None, "high"), (None, "t2", "medium"),
                                      (frozenset({"t4"}), "t4", None)]:
        p = Principal(name="x", tenants=tenants)
        want = sorted((o for o in v.opportunities.values()
                       if (tenants is None or o.tenant_id in tenants) and (tenant_arg is None or o.tenant_id == tenant_arg)
                       and (prio is None or PRIORITY_RANK[o.priority] <= PRIORITY_RANK[prio])), key=opportunity_rank_key)
        got = svc.list_opportunities(p, tenant_arg, 7, prio)
        assert got.count == len(want) and [o.opportunity_id for o in got.opportunities] == \
            [o.opportunity_id for o in want[:7]], (tenants, tenant_arg, prio)


def test_conflict_and_rolling_back_are_listed_as_active() -> None:
    from streams.records import ImprovementExecution

    v = Views()
    for iid, status in (("c", "conflict"), ("r", "rolling_back"), ("d", "rolled_back")):
        ex = ImprovementExecution(improvement_id=iid, status=status, tenant_id="t1", updated_at=NOW)  # type: ignore[arg-type]
        v.apply(t.IMPROVEMENT_STATE, iid.encode(), ex.to_bytes())
    assert sorted(ex.improvement_id for ex in v.active_improvements()) == ["c", "r"]
