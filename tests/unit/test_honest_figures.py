"""Figures that count what they name: LLM generations only, telemetry a cycle saw, workers as workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agents.improvement.analysed import group_totals, since
from mcp_server.views import Views
from streams import topics as t
from streams.records import AuditRecord, ImprovementEvent

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _events(v: Views, imp: str, steps: list[tuple[str, dict[str, Any]]]) -> None:
    for i, (status, data) in enumerate(steps):
        ev = ImprovementEvent(event_id=f"{imp}-{i}", improvement_id=imp, status=status,  # type: ignore[arg-type]
                              timestamp=NOW + timedelta(seconds=i), tenant_id="t1", data=data)
        v.apply(t.IMPROVEMENT_EVENTS, imp.encode(), ev.to_bytes())


def test_config_only_plans_generate_no_code() -> None:
    v = Views()
    for imp in ("a", "b", "c"):  # three offline playbook plans, each through `generating`
        _events(v, imp, [("pending", {}), ("generating", {}),
                         ("validating", {"plan": {"changes": [{"parameter": "cache_size", "new": 2048}]}}),
                         ("awaiting_approval", {})])
    assert v.code_generations() == (0, 0)


def test_llm_generations_and_generated_components_are_counted() -> None:
    v = Views()
    _events(v, "code", [("pending", {}), ("generating", {}),
                        ("validating", {"generation": {"ok": True, "input_tokens": 10, "output_tokens": 20}})])
    _events(v, "bad", [("pending", {}), ("generating", {}), ("validating", {"generation": {"ok": False}})])
    for i, ok in enumerate((True, False)):
        rec = AuditRecord(audit_id=f"au{i}", timestamp=NOW, actor="w", action="code_generation", detail={"ok": ok})
        v.apply(t.AUDIT, rec.audit_id.encode(), rec.to_bytes())
    assert v.code_generations() == (4, 2)


def test_telemetry_totals_over_the_group_and_since_a_start() -> None:
    beats = {"w1": {"processed_by_kind": {"metric": 100, "log": 7}}, "me": {"processed_by_kind": {"metric": 1}},
             "w2": {"processed_by_kind": {"metric": 50, "event": 2, "bogus": 9}}}
    start = group_totals(beats, "me", {"metric": 40, "log": 1})
    assert start == {"metrics": 190, "logs": 8, "events": 2}  # own heartbeat replaced by the live counters
    beats["w1"] = {"processed_by_kind": {"metric": 160, "log": 7}}
    end = group_totals(beats, "me", {"metric": 55, "log": 1})
    assert since(start, end) == {"metrics": 75, "logs": 0, "events": 0}
    assert since(end, start) == {"metrics": 0, "logs": 0, "events": 0}
