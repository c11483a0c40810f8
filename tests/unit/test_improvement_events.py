"""The improvements.events typed union: every status round-trips, malformed events are refused with a reason,
old records still parse, and everything the current producers (the real step functions) emit is accepted."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.improvement.journal import AppliedJournal
from agents.improvement.logic.lifecycle import fold, new_event, next_event
from agents.improvement.metrics_tap import Sample
from agents.improvement.stepctx import StepContext
from streams.commands import Decision, ResolveConflict, TriggerCycle
from streams.errors import BadRecord
from streams.improvement_events import (
    EVENT_TYPES,
    TypedEvent,
    check_event,
    parse_improvement_event,
    typed_event,
)
from streams.records import ImprovementEvent, ImprovementExecution, ImprovementOpportunity, ImprovementStatus
from streams.settings import Settings
from streams.views import StateViews
from tests.unit.test_rollback import MemoryActuator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES: tuple[str, ...] = typing.get_args(ImprovementStatus)
OPP = ImprovementOpportunity(opportunity_id="o1", title="slow api", description="p95 up", tenant_id="acme",
                             problem_type="latency", affected_components=["api"], first_seen=T0, last_seen=T0,
                             impact_score=120.0, priority="high")
CHANGE = {"key": "/kaizen/acme/api/canary/cache_size", "previous": None, "new": "2048", "fingerprint": "f",
          "improvement_id": "imp-1", "target": "canary", "version": "1", "noop": False, "actuator": "ssm"}
# one representative payload per status, as its producers write it
SAMPLES: dict[str, dict[str, Any]] = {
    "pending": {"opportunity": OPP.model_dump(mode="json"), "requested_by": "alice", "cycle_kind": "manual"},
    "queued": {},
    "generating": {},
    "validating": {"plan": {"changes": []}, "generated_code": {"svc/a.py": "x = 1\n"},
                   "generation": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}},
    "awaiting_approval": {"validation": {"ok": True, "checks": {}},
                          "approval": {"status": "approval_required", "reasons": ["system-wide"]}},
    "deferred": {},
    "deploying": {"approval": {"status": "approved", "by": "bob"}},
    "monitoring": {"deployment": {"stage": "canary", "canary": [CHANGE], "full": [], "started_at": 1.0,
                                  "stage_started_at": 2.0, "actuator": "ssm"},
                   "baseline": {"latency_p95": 120.0, "samples": 30.0}},
    "rolling_back": {"verdict": "rollback", "degradation": 0.4, "monitoring_metrics": {"latency_p95": [300.0]},
                     "assessment": {"improvement_id": "imp-1"}},
    "conflict": {"conflicts": [CHANGE["key"]], "rollback": {"undone": [], "conflicts": [CHANGE["key"]],
                                                          "retries": 0, "verified": True, "at": 3.0}},
    "completed": {"verdict": "keep", "degradation": 0.0, "impact": {"improvement_id": "imp-1"}},
    "rolled_back": {"verdict": "rollback", "rollback": {"undone": [CHANGE["key"]], "conflicts": [], "retries": 2}},
    "failed": {"validation": {"ok": False}, "approval": {"status": "denied", "reasons": ["out of bounds"]}},
    "rejected": {"resolution": {"action": "keep_current", "by": "bob", "command_id": "c-1"}},
}


def _event(status: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"event_id": f"imp-1:{status}:3", "improvement_id": "imp-1", "status": status,
            "timestamp": T0.isoformat(), "actor": "kaizen", "reason": "r", "cycle_id": "cy", "tenant_id": "acme",
            "data": data, **extra}


def test_the_union_covers_every_status_once() -> None:
    members = typing.get_args(typing.get_args(TypedEvent)[0])
    assert set(members) == set(EVENT_TYPES)
    covered = [s for m in members for s in typing.get_args(m.model_fields["status"].annotation)]
    assert sorted(covered) == sorted(STATUSES) and sorted(SAMPLES) == sorted(STATUSES)


@pytest.mark.parametrize("status", STATUSES)
def test_each_status_round_trips(status: str) -> None:
    raw = orjson.dumps(_event(status, SAMPLES[status]))
    typed = typed_event(raw)
    assert typed.status == status and type(typed).__name__.endswith("Event")
    again = typed_event(typed.model_dump_json(exclude_unset=True))
    assert again == typed
    generic = parse_improvement_event(raw)  # what the fold gets: the data exactly as the producer wrote it
    assert isinstance(generic, ImprovementEvent) and generic.data == SAMPLES[status]


@pytest.mark.parametrize(("value", "reason", "detail"), [
    (b"{not json", "improvement event is not a JSON object", "Invalid JSON"),
    (b"[1, 2]", "improvement event is not a JSON object", "object"),
    (orjson.dumps({"event_id": "e", "improvement_id": "i"}), "improvement event without a status", ""),
    (orjson.dumps(_event("exploded", {})), "unknown improvement status 'exploded'", ""),
    (orjson.dumps({**_event("queued", {}), "improvement_id": ""}), "malformed improvement event",
     "queued.improvement_id"),
    (orjson.dumps(_event("pending", {"opportunity": {"title": 5}})), "malformed improvement event",
     "pending.data.opportunity"),
    (orjson.dumps(_event("pending", [1])), "malformed improvement event", "pending.data"),  # type: ignore[arg-type]
    (orjson.dumps(_event("monitoring", {"baseline": {"latency_p95": "fast"}})), "malformed improvement event",
     "monitoring.data.baseline.latency_p95"),
    (orjson.dumps(_event("monitoring", {"deployment": {"canary": "all of it"}})), "malformed improvement event",
     "monitoring.data.deployment.canary"),
    (orjson.dumps(_event("monitoring", {"deployment": {"canary": [{"new": "1"}]}})), "malformed improvement event",
     "monitoring.data.deployment.canary.0.key"),
    (orjson.dumps(_event("conflict", {})), "malformed improvement event", "conflict.data.conflicts"),
    (orjson.dumps(_event("rolling_back", {"resolution": {"action": "overwrite", "by": "x"}})),
     "malformed improvement event", "rolling_back.data.resolution.action"),
    (orjson.dumps(_event("completed", {"degradation": "a lot"})), "malformed improvement event",
     "completed.data.degradation"),
    (orjson.dumps({**_event("completed", {}), "timestamp": "yesterday"}), "malformed improvement event",
     "completed.timestamp"),
])
def test_a_malformed_event_is_refused_with_a_reason(value: bytes, reason: str, detail: str) -> None:
    with pytest.raises(BadRecord) as info:
        parse_improvement_event(value)
    assert info.value.reason == reason
    assert detail in info.value.detail, info.value.detail


def test_old_and_richer_records_still_parse() -> None:
    """Records written before the union (no data, partial deployments, a pending event without an
    opportunity) and producers adding keys of their own are never refused."""
    old = [_event("pending", {}), _event("monitoring", {"deployment": {}}),
           _event("monitoring", {"deployment": {"stage": "full"}}), _event("deploying", {"stage": "canary"}),
           _event("completed", {"verdict": "keep"}), {k: v for k, v in _event("queued", {}).items()
                                                       if k not in ("actor", "reason", "cycle_id", "tenant_id",
                                                                    "data")}]
    richer = _event("monitoring", {"deployment": {"stage": "canary", "canary": [{**CHANGE, "region": "eu"}],
                                                  "weights": [1, 2]}, "extra_context": {"a": 1}},
                    new_top_level_field=True)
    for rec in [*old, richer]:
        ev = parse_improvement_event(orjson.dumps(rec))
        assert ev.data == rec.get("data", {})


# ------------------------------------------------------------------ what the real producers emit


class FakeTap:
    """The metrics tap: the baseline window (asked with an end) and the live one (asked without)."""

    def __init__(self, latency: float) -> None:
        self.baseline = [Sample("Latency", 100.0, None) for _ in range(30)] + \
            [Sample("ErrorRate", 0.001, None, "None") for _ in range(30)]
        self.latency = latency

    def window(self, tenant: str, component: str, since: float, until: float | None = None,
               variant: str | None = None) -> list[Sample]:
        if until is not None:
            return list(self.baseline)
        return [Sample("Latency", self.latency, None) for _ in range(30)] + \
            [Sample("ErrorRate", 0.001, None, "None") for _ in range(30)]

    def has_variant(self, tenant: str, component: str, variant: str, since: float) -> bool:
        return False

    def reading(self, tenant: str, component: str) -> bool:
        return False

    def newest(self, tenant: str, component: str) -> float | None:
        return float("inf")  # telemetry has arrived up to now


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _ctx(tmp_path: Path, latency: float) -> tuple[StepContext, MemoryActuator, Clock]:
    act = MemoryActuator()
    clock = Clock()
    settings = Settings(monitoring_duration_seconds=20, monitoring_check_interval_seconds=0.5)
    ctx = StepContext(settings, StateViews("127.0.0.1:1"), FakeTap(latency), act, None, None,  # type: ignore[arg-type]
                      clock=clock, journal=AppliedJournal(tmp_path / "j.jsonl"))
    return ctx, act, clock


class Recorder:
    """Folds what the producers return, checking each event against the union on the way."""

    def __init__(self) -> None:
        self.seen: list[ImprovementEvent] = []

    def take(self, ex: ImprovementExecution | None, events: list[ImprovementEvent]) -> ImprovementExecution:
        assert events, "the producer emitted nothing"
        for ev in events:
            check_event(ev)  # raises BadRecord with the reason if a producer writes what the union refuses
            parse_improvement_event(ev.to_bytes())
            self.seen.append(ev)
            ex = fold(ex, ev)
        assert ex is not None
        return ex


async def _to_monitoring(tmp_path: Path, rec: Recorder, latency: float, approve: bool = True
                         ) -> tuple[StepContext, MemoryActuator, Clock, ImprovementExecution]:
    from agents.improvement import agent, steps
    from agents.improvement.cycle import pending_event
    from agents.improvement.logic.decisions import decision_events

    ctx, act, clock = _ctx(tmp_path, latency)
    cmd = TriggerCycle(command_id="c-1", timestamp=T0, actor="alice", roles=["operator"], tenant_id="acme")
    ex = rec.take(None, [pending_event(cmd, "cy-1", OPP, T0)])
    ex = rec.take(ex, await agent._admit(ctx, ex))  # generating: capacity available
    ex = rec.take(ex, await steps.step_generating(ctx, ex))
    ex = rec.take(ex, await steps.step_validating(ctx, ex))
    if ex.status == "awaiting_approval":
        def decision(kind: str) -> Decision:
            return Decision(command_id=f"d-{kind}", timestamp=T0, actor="bob", roles=["approver"],
                            kind=kind, improvement_id=ex.improvement_id)  # type: ignore[arg-type]

        ex = rec.take(ex, decision_events(decision("defer"), ex, T0))
        ex = rec.take(ex, decision_events(decision("approve" if approve else "reject"), ex, T0))
    if ex.status == "deploying":
        ex = rec.take(ex, await steps.step_deploying(ctx, ex))
    return ctx, act, clock, ex


async def test_every_producer_writes_events_the_union_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from agents.improvement import agent, rollback, rollout, steps
    from agents.improvement.logic.decisions import resolution_events
    from streams import app as A

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    rec = Recorder()
    # a healthy change: canary, full rollout, completed
    ctx, act, clock, ex = await _to_monitoring(tmp_path / "a", rec, latency=100.0)
    assert ex.status == "monitoring", [(e.status, e.reason) for e in rec.seen]
    for _ in range(10):  # [] is "keep watching"
        clock.now += timedelta(seconds=5)
        if ex.status == "monitoring" and (events := await steps.monitor_once(ctx, ex)):
            ex = rec.take(ex, events)
    assert ex.status == "completed", [(e.status, e.reason) for e in rec.seen[-3:]]
    # a degrading change: rolling_back, rolled_back
    ctx, act, clock, ex = await _to_monitoring(tmp_path / "b", rec, latency=400.0)
    clock.now += timedelta(seconds=10)
    ex = rec.take(ex, await steps.monitor_once(ctx, ex))
    assert ex.status == "rolling_back"
    ex = rec.take(ex, await rollback.step_rolling_back(ctx, ex))
    assert ex.status == "rolled_back"
    # a target changed by hand: conflict (monitoring and rollback), then both resolutions
    ctx, act, clock, ex = await _to_monitoring(tmp_path / "c", rec, latency=100.0)
    key = ex.deployment["canary"][0]["key"]
    act.values[key] = "hand-made"
    ex = rec.take(ex, rollout.conflict_event(ctx, ex, await rollout.changed_by_others(ctx, ex, force=True)))
    resolve = ResolveConflict(command_id="r-1", timestamp=T0, actor="bob", roles=["approver"],
                              improvement_id=ex.improvement_id, action="retry_rollback")
    ex = rec.take(ex, resolution_events(resolve, ex, T0))
    ex = rec.take(ex, await rollback.step_rolling_back(ctx, ex))
    assert ex.status == "conflict" and ex.history[-1].data["rollback"]["conflicts"] == [key]
    keep = resolve.model_copy(update={"action": "keep_current", "command_id": "r-2"})
    ex = rec.take(ex, resolution_events(keep, ex, T0))
    assert ex.status == "rejected" and act.values[key] == "hand-made"
    # rollback disabled: the verdict pauses as conflict
    ctx, act, clock, ex = await _to_monitoring(tmp_path / "d", rec, latency=100.0)
    ctx.views.flags["enable_improvement_rollback"] = False
    ex = rec.take(ex, steps.start_rollback(ctx, ex, "rollback", 0.5, "slower", {"latency_p95": 300.0}))
    assert ex.status == "conflict"
    # queued when full, rejected while awaiting approval, failed on an unsafe component name
    ctx, _act, _clock = _ctx(tmp_path / "e", 100.0)
    busy = [ImprovementExecution(improvement_id=f"busy-{i}", status="monitoring") for i in range(10)]
    ctx.views.improvements.update({b.improvement_id: b for b in busy})
    queued = rec.take(None, [new_event("imp-q", "pending", T0, data={"opportunity": OPP.model_dump(mode="json")})])
    rec.take(queued, await agent._admit(ctx, queued))
    _c, _a, _k, ex = await _to_monitoring(tmp_path / "f", rec, latency=100.0, approve=False)
    bad = OPP.model_copy(update={"affected_components": ["api/canary"]})
    ex = rec.take(None, [new_event("imp-bad", "pending", T0, data={"opportunity": bad.model_dump(mode="json")})])
    ex = rec.take(ex, [next_event(ex, "generating", T0)])
    ctx, _act, _clock = _ctx(tmp_path / "g", 100.0)
    rec.take(ex, await steps.step_generating(ctx, ex))
    # a lost state's recovery event (the journal reconciliation)
    ctx, act, _clock = _ctx(tmp_path / "h", 100.0)
    change = await act.apply("acme/api/cache_size", "2048", "imp-lost", "canary")
    ctx.journal.append("intent", change, "acme")  # type: ignore[union-attr]
    rc = rollback.Reconciler(started=0.0)
    await rc.run(ctx, lambda _imp: None)
    rec.take(None, await rc.run(ctx, lambda _imp: None))
    assert {e.status for e in rec.seen} == set(STATUSES), sorted(set(STATUSES) - {e.status for e in rec.seen})
