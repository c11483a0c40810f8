"""`kaizen healing`: status, triggers, actions, check over the execution-metrics log, history."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

from agents.healing.history import HealingHistory, load_healing_config, read_execution_metrics
from agents.healing.logic.execution_metrics import ExecutionMetrics, compute_baselines
from agents.healing.logic.healing import (
    ActionPlan,
    ActionRegistry,
    HealingConfig,
    TriggerFiring,
    TriggerFramework,
    observations_from_executions,
)
from streams.settings import get_settings

app = typer.Typer(help="Self-healing triggers and actions: status, configuration, checks and history.",
                  no_args_is_help=True)
console = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Healing config JSON (default: $KAIZEN_HEALING_CONFIG).")]


def _fail(message: str, code: int = 2) -> NoReturn:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _config(path: Path | None) -> HealingConfig:
    try:
        return load_healing_config(path)
    except ValueError as exc:
        _fail(f"{exc} — fix the file or unset KAIZEN_HEALING_CONFIG to use the defaults")


def _data_dir() -> Path:
    return Path(get_settings().kaizen_data_dir)


def _history() -> HealingHistory:
    return HealingHistory(_data_dir() / "self_healing")


def _default_log() -> Path:
    return _data_dir() / "execution_metrics.jsonl"


def _emit_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def status(
    health: Annotated[bool, typer.Option("--health", help="Run the health checks; exit 1 when unhealthy.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Framework status: triggers, actions, history and the execution-metrics log."""
    cfg = _config(config)
    hist = _history()
    records = hist.read()
    log = _default_log()
    info: dict[str, Any] = {
        "triggers_enabled": sum(t.enabled for t in cfg.triggers), "triggers_total": len(cfg.triggers),
        "actions_enabled": sum(a.enabled for a in cfg.actions), "actions_total": len(cfg.actions),
        "cooldown_seconds": cfg.cooldown_seconds, "history_dir": str(hist.directory),
        "triggers_fired": sum(r.kind == "trigger" for r in records),
        "actions_executed": sum(r.kind == "action" for r in records),
        "last_event": records[-1].timestamp.isoformat() if records else None,
        "execution_log": str(log), "execution_log_exists": log.exists(),
    }
    checks: dict[str, bool] = {}
    if health:
        data_dir = _data_dir()
        checks["config_valid"] = True  # _config exited otherwise
        checks["data_dir_writable"] = os.access(data_dir if data_dir.exists() else data_dir.parent.resolve(), os.W_OK)
        errors: list[str] = []
        if log.exists():
            read_execution_metrics(log, 0, errors)
        checks["execution_log_readable"] = not errors
        checks["history_readable"] = not hist.directory.exists() or os.access(hist.directory, os.R_OK)
        info["health"] = checks
        info["healthy"] = all(checks.values())
    if as_json:
        _emit_json(info)
    else:
        table = Table(title="self-healing status", show_header=False)
        for key, value in info.items():
            if key != "health":
                table.add_row(key, str(value))
        for key, ok in checks.items():
            table.add_row(f"health: {key}", "[green]ok[/green]" if ok else "[red]FAIL[/red]")
        console.print(table)
    if health and not info["healthy"]:
        raise typer.Exit(1)


@app.command()
def triggers(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The configured triggers (the seven defaults unless overridden)."""
    cfg = _config(config)
    if as_json:
        _emit_json([t.model_dump() for t in cfg.triggers])
        return
    table = Table(title="triggers")
    for col in ("name", "type", "threshold", "target agent", "enabled", "description"):
        table.add_column(col)
    for t in cfg.triggers:
        op = "≥" if t.comparison == "ge" else ">"
        table.add_row(t.name, t.type, f"{t.field} {op} {t.threshold:g}", t.target_agent, str(t.enabled), t.description)
    console.print(table)


@app.command()
def actions(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The registered corrective actions (the eight defaults unless overridden)."""
    cfg = _config(config)
    if as_json:
        _emit_json([a.model_dump() for a in cfg.actions])
        return
    table = Table(title="actions")
    for col in ("name", "type", "priority", "target agent", "triggers", "change hint", "enabled"):
        table.add_column(col)
    for a in cfg.actions:
        table.add_row(a.name, a.type, a.priority, a.target_agent, ", ".join(a.triggers) or "(≥3 triggers)",
                      str(a.change_hint.get("kind", "")), str(a.enabled))
    console.print(table)


def _run_check(records: list[ExecutionMetrics], cfg: HealingConfig,
               seen: set[str]) -> tuple[list[TriggerFiring], list[ActionPlan]]:
    baselines = compute_baselines(records)
    fw, reg = TriggerFramework(cfg), ActionRegistry(cfg)
    fired: list[TriggerFiring] = []
    plans: list[ActionPlan] = []
    for obs in observations_from_executions(records, baselines):
        new = [f for f in fw.evaluate(obs, obs.timestamp) if f.firing_id not in seen]
        fired += new
        plans += reg.actions_for_all(new)
    return fired, plans


@app.command()
def check(
    input_path: Annotated[Path | None, typer.Option("--input", help="Execution-metrics JSONL "
                                                    "(default: KAIZEN_DATA_DIR/execution_metrics.jsonl).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Do not record the results in the history.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the triggers over the execution-metrics log, record firings and actions, print them.

    Firings already in the history (same trigger, tenant, component and time) are not recorded again,
    so running check twice over the same log is harmless.
    """
    cfg = _config(config)
    path = input_path or _default_log()
    if not path.exists():
        _fail(f"no execution metrics at {path}; pass --input FILE.jsonl or set KAIZEN_DATA_DIR")
    if path.is_dir():
        _fail(f"{path} is a directory; --input takes a JSONL file")
    errors: list[str] = []
    records, _ = read_execution_metrics(path, 0, errors)
    hist = _history()
    seen = {str(r.detail.get("firing_id")) for r in hist.read(kind="trigger")}
    fired, plans = _run_check(records, cfg, seen)
    recorded = False if dry_run else hist.record(fired, plans)
    result = {"input": str(path), "executions": len(records), "invalid_lines": len(errors),
              "triggers_fired": len(fired), "actions_executed": len(plans), "recorded": recorded,
              "firings": [f.model_dump(mode="json", exclude={"evidence"}) for f in fired],
              "actions": [p.model_dump(mode="json", exclude={"handoff"}) for p in plans]}
    if as_json:
        _emit_json(result)
        return
    console.print(f"{len(records)} executions from {path}"
                  + (f" ({len(errors)} invalid lines skipped)" if errors else ""))
    ft = Table(title=f"triggers fired: {len(fired)}")
    for col in ("time", "trigger", "tenant", "component", "value", "threshold", "target agent"):
        ft.add_column(col)
    for f in fired:
        ft.add_row(f.timestamp.isoformat(), f.trigger, f.tenant_id, f.component, f"{f.value:.4g}",
                   f"{f.threshold:g}", f.target_agent)
    at = Table(title=f"actions: {len(plans)}")
    for col in ("time", "action", "priority", "trigger", "component", "target agent"):
        at.add_column(col)
    for p in plans:
        at.add_row(p.timestamp.isoformat(), p.action, p.priority, p.trigger, p.component, p.target_agent)
    console.print(ft)
    console.print(at)


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the newest N records.")] = 20,
    kind: Annotated[str | None, typer.Option("--kind", help="trigger or action.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The newest fired triggers and executed actions."""
    if kind not in (None, "trigger", "action"):
        _fail(f"--kind must be 'trigger' or 'action', not {kind!r}")
    records = _history().read(limit=limit, kind=kind)
    if as_json:
        _emit_json([r.model_dump(mode="json") for r in records])
        return
    table = Table(title=f"self-healing history (newest {limit})")
    for col in ("time", "kind", "name", "tenant", "component", "detail"):
        table.add_column(col)
    for r in records:
        detail = r.detail.get("target_agent", "")
        table.add_row(r.timestamp.isoformat(), r.kind, r.name, r.tenant_id, r.component, str(detail))
    console.print(table)
