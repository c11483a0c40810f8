"""What the improvement steps share: the worker's settings, views, tap, actuators, journal and clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.improvement.generator import CodeGenerator
from agents.improvement.journal import AppliedJournal
from agents.improvement.logic.playbooks import ParameterChange, Plan
from agents.improvement.metrics_tap import MetricsTap
from agents.improvement.undo import actuator_for
from connectors.actuators.base import Actuator, AppliedChange
from streams.records import ImprovementExecution
from streams.settings import Settings
from streams.views import StateViews

FLAG_NAMES = ("enable_self_building", "enable_cloudwatch_streaming", "enable_autonomous_improvements",
              "enable_component_generation", "enable_improvement_rollback")


@dataclass
class StepContext:
    """What the steps need from the worker: settings, views, actuators, generator and a clock."""

    settings: Settings
    views: StateViews
    tap: MetricsTap
    actuator: Actuator
    files_actuator: Actuator | None
    generator: CodeGenerator
    clock: Any = field(default=lambda: datetime.now(UTC))
    journal: AppliedJournal | None = None

    def actuators(self) -> dict[str, Actuator]:
        """Actuators by name: a change is undone through the one that applied it."""
        out = {self.actuator.name: self.actuator}
        if self.files_actuator is not None:
            out.setdefault(self.files_actuator.name, self.files_actuator)
        return out

    def actuator_of(self, change: AppliedChange) -> Actuator:
        return actuator_for(self.actuators(), change, self.actuator)

    async def journal_append(self, op: str, change: AppliedChange, tenant_id: str = "", **extra: Any) -> None:
        if self.journal is not None:
            await asyncio.to_thread(self.journal.append, op, change, tenant_id, **extra)

    def flags(self) -> dict[str, bool]:
        base = {n: bool(getattr(self.settings, n)) for n in FLAG_NAMES}
        base.update(self.views.flags)
        return base


def component_of(ex: ImprovementExecution) -> str:
    opp = ex.opportunity
    return opp.affected_components[0] if opp and opp.affected_components else "default"


def plan_from_dict(d: dict[str, Any]) -> Plan:
    changes = [ParameterChange(c["parameter"], c.get("old"), c["new"],
                               tuple(c["bounds"]) if c.get("bounds") else None)  # type: ignore[arg-type]
               for c in d.get("changes", [])]
    return Plan(d["tenant_id"], d["component"], d.get("playbook", "?"), changes, d.get("rationale", ""),
                float(d.get("expected_gain_pct", 0.0)), d.get("risk", "medium"),
                change_type=d.get("change_type", "configuration"), files=dict(d.get("files", {})))


