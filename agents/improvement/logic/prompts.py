"""LLM prompts of the improvement-cycle manual (§3.1) and parsing of ```python:path code blocks (§3.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from streams.records import ImprovementOpportunity, TelemetryInsight

DEFAULT_ARCHITECTURE = (
    "kaizen: a Kafka-native improvement loop. Services report metrics, logs and events to CloudWatch; "
    "Faust agents score them, rank improvement opportunities and apply bounded changes through actuators "
    "(SSM Parameter Store, a Kafka config topic, files under git) with canary rollout, monitoring and "
    "automatic rollback. Every component is multi-tenant: all data access is scoped by tenant_id."
)
QUALITY_RULES = (
    "Code quality standards:\n"
    "- Python 3.11, type hints on every function, cyclomatic complexity < 10 per function\n"
    "- no eval/exec, no subprocess or os.system, no pickle; parameterised SQL only\n"
    "- no file, process or network access and nothing run at import time (module level: imports, defs,\n"
    "  classes, constants); only standard-library modules for pure computation (docs/validation.md)\n"
    "- every file under generated/ (code) or tests/ (tests), as a relative path\n"
    "- every data access and SQL query filtered by tenant_id; never hard-code another tenant\n"
    "Answer with one fenced block per file, opened as ```python:path/to/file.py"
)
_BLOCK = re.compile(r"```python:([^\s`]+)[ \t]*\r?\n(.*?)```", re.DOTALL)


def _evidence(insights: Sequence[TelemetryInsight]) -> str:
    if not insights:
        return "(none recorded)"
    lines = []
    for i in insights:
        metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(i.metrics.items()))
        lines.append(f"- [{i.severity}] {i.insight_type} on {i.affected_component}: {i.description}"
                     + (f" ({metrics})" if metrics else "") + f"; confidence {i.confidence_score:.2f}")
    return "\n".join(lines)


def build_improvement_prompt(
    opportunity: ImprovementOpportunity,
    existing_code: str = "",
    architecture: str = DEFAULT_ARCHITECTURE,
    target_improvement: float | None = None,
) -> str:
    """The manual's §3.1 prompt: architecture, existing code, requirement, evidence, goals."""
    target = target_improvement if target_improvement is not None else (opportunity.performance_gain_percentage or 20)
    components = ", ".join(opportunity.affected_components) or "(unspecified)"
    return f"""System Architecture:
{architecture}

Existing Code Pattern:
{existing_code or "(no existing code provided)"}

Improvement Requirement:
{opportunity.title}: {opportunity.description}
Problem type: {opportunity.problem_type}; component(s): {components}; tenant: {opportunity.tenant_id}

Telemetry Evidence:
{_evidence(opportunity.telemetry_evidence)}

Optimization Goals:
- Reduce latency by {target:g}%
- Maintain test coverage > 85%
- Follow existing code patterns
- Ensure backward compatibility

{QUALITY_RULES}

Generate improved code that addresses the requirement while meeting all goals.
"""


def build_component_prompt(
    component_type: str,
    requirements: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    insights: Sequence[TelemetryInsight] = (),
    architecture: str = DEFAULT_ARCHITECTURE,
) -> str:
    """The component-generation prompt (architecture, patterns, requirements, insights)."""
    ctx = dict(context or {})
    patterns = ctx.pop("existing_code", "") or "(no examples provided)"
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    return f"""System Architecture:
{architecture}

Existing Code Pattern:
{patterns}

Component Type: {component_type}

Component Requirements:
{orjson.dumps(dict(requirements), option=opts, default=str).decode()}

Additional Context:
{orjson.dumps(ctx, option=opts, default=str).decode()}

Telemetry Evidence:
{_evidence(insights)}

{QUALITY_RULES}

Generate the {component_type} component that meets the requirements.
"""


def parse_code_blocks(text: str) -> dict[str, str]:
    """```python:path/to/file.py blocks → {path: code}; a later block for the same path wins."""
    files: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        path = match.group(1).strip()
        files[path] = match.group(2).rstrip() + "\n"
    return files
