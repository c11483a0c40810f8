"""Prompts: the manual's sections in order, and ```python:path parsing."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.improvement.logic.prompts import (
    build_component_prompt,
    build_improvement_prompt,
    parse_code_blocks,
)
from connectors.llm.base import render_code_blocks
from streams.records import ImprovementOpportunity, TelemetryInsight

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_improvement_prompt_has_the_manual_sections() -> None:
    ev = TelemetryInsight(insight_type="performance_degradation", severity="high", affected_component="checkout",
                          affected_tenants=["acme"], description="p95 latency +35%", confidence_score=0.9,
                          timestamp=T0, tenant_id="acme", metrics={"latency_p95": 420.0})
    opp = ImprovementOpportunity(opportunity_id="o", title="Slow checkout", description="p95 latency high",
                                 tenant_id="acme", problem_type="latency", affected_components=["checkout"],
                                 performance_gain_percentage=30, telemetry_evidence=[ev], first_seen=T0, last_seen=T0)
    p = build_improvement_prompt(opp, existing_code="def handler(): ...")
    order = ["System Architecture:", "Existing Code Pattern:", "Improvement Requirement:", "Telemetry Evidence:",
             "Optimization Goals:"]
    positions = [p.index(s) for s in order]
    assert positions == sorted(positions)
    assert "Reduce latency by 30%" in p and "Maintain test coverage > 85%" in p
    assert "def handler(): ..." in p and "latency_p95=420" in p and "```python:" in p


def test_component_prompt() -> None:
    p = build_component_prompt("skill", {"name": "dedup", "inputs": ["commit"]}, {"existing_code": "x = 1"})
    assert "Component Type: skill" in p and '"name": "dedup"' in p and "x = 1" in p


def test_parse_code_blocks() -> None:
    text = "Here:\n```python:svc/a.py\nx = 1\n```\ntext\n```python:svc/b.py\ndef f():\n    return 2\n```\n```js\nno\n```"
    files = parse_code_blocks(text)
    assert files == {"svc/a.py": "x = 1\n", "svc/b.py": "def f():\n    return 2\n"}
    assert parse_code_blocks(render_code_blocks(files)) == files
    assert parse_code_blocks("no code here") == {}
