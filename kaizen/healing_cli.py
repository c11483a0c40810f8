"""`kaizen healing`: status, triggers, actions, check and history — over the group's healing.history topic."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agents.healing.history import (
    HealingHistory,
    load_healing_config,
    read_execution_metrics,
    read_history_topic,
    read_topic_values,
)
from agents.healing.logic.effects import EFFECTS, role_of
from agents.healing.logic.execution_metrics import ExecutionMetrics, compute_baselines
from agents.healing.logic.healing import (
    ActionPlan,
    ActionRegistry,
    HealingConfig,
    HealingRecord,
    Observation,
    TriggerFiring,
    TriggerFramework,
    observations_from_executions,
)
from kaizen.output import stdout_console
from streams import topics as T
from streams.settings import get_settings

app = typer.Typer(help="Self-healing triggers and actions: status, configuration, checks and history.",
                  no_args_is_help=True)
console = stdout_console()  # complete rows when piped (kaizen/output.py)

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


def _bootstrap() -> str:
    bootstrap = get_settings().kafka_bootstrap_servers
    if not bootstrap:
        _fail("KAFKA_BOOTSTRAP_SERVERS is not set: the healing history is the healing.history topic of the "
              "group (`kaizen run` prints the embedded broker's address)")
    return bootstrap


def _read_history(bootstrap: str) -> list[HealingRecord]:
    try:
        return asyncio.run(read_history_topic(bootstrap))
    except KafkaError as exc:
        _fail(f"cannot read {T.HEALING} from {bootstrap}: {type(exc).__name__}: {exc}")


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
    """Framework status: triggers, actions, and the group's history (the healing.history topic)."""
    cfg = _config(config)
    bootstrap = _bootstrap()
    records = _read_history(bootstrap)
    fired = Counter(r.name for r in records if r.kind == "trigger")
    info: dict[str, Any] = {
        "triggers_enabled": sum(t.enabled for t in cfg.triggers), "triggers_total": len(cfg.triggers),
        "actions_enabled": sum(a.enabled for a in cfg.actions), "actions_total": len(cfg.actions),
        "cooldown_seconds": cfg.cooldown_seconds, "history_topic": T.HEALING, "bootstrap": bootstrap,
        "triggers_fired": sum(fired.values()), "actions_executed": sum(r.kind == "action" for r in records),
        "effects": sum(r.kind == "effect" for r in records), "fired_by_trigger": dict(fired),
        "last_event": records[-1].timestamp.isoformat() if records else None,
    }
    checks: dict[str, bool] = {}
    if health:
        data_dir = _data_dir()
        checks["config_valid"] = True  # _config exited otherwise
        checks["history_readable"] = True  # _read_history exited otherwise
        checks["data_dir_writable"] = os.access(data_dir if data_dir.exists() else data_dir.parent.resolve(), os.W_OK)
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
    for col in ("name", "type", "threshold", "target agent (role)", "enabled", "description"):
        table.add_column(col)
    for t in cfg.triggers:
        op = "≥" if t.comparison == "ge" else ">"
        table.add_row(t.name, t.type, f"{t.field} {op} {t.threshold:g}", f"{t.target_agent} ({role_of(t.target_agent)})",
                      str(t.enabled), t.description)
    console.print(table)


@app.command()
def actions(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The registered corrective actions (the eight defaults unless overridden)."""
    cfg = _config(config)
    if as_json:
        _emit_json([{**a.model_dump(), "role": role_of(a.target_agent),
                     "effect": EFFECTS[a.name].kind if a.name in EFFECTS else None} for a in cfg.actions])
        return
    table = Table(title="actions")
    for col in ("name", "type", "priority", "role", "triggers", "change hint", "effect in kaizen", "enabled"):
        table.add_column(col)
    for a in cfg.actions:
        eff = EFFECTS.get(a.name)
        table.add_row(a.name, a.type, a.priority, role_of(a.target_agent), ", ".join(a.triggers) or "(≥3 triggers)",
                      str(a.change_hint.get("kind", "")), eff.summary if eff else "none (custom action)",
                      str(a.enabled))
    console.print(table)


def _run_check(records: list[ExecutionMetrics], cfg: HealingConfig,
               seen: set[str]) -> tuple[list[tuple[Observation, list[TriggerFiring]]], list[ActionPlan]]:
    """Local evaluation (own cooldowns): the observations that fire, with their firings, and the plans."""
    baselines = compute_baselines(records)
    fw, reg = TriggerFramework(cfg), ActionRegistry(cfg)
    fired: list[tuple[Observation, list[TriggerFiring]]] = []
    plans: list[ActionPlan] = []
    for obs in observations_from_executions(records, baselines):
        new = [f for f in fw.evaluate(obs, obs.timestamp) if f.firing_id not in seen]
        if new:
            fired.append((obs, new))
            plans += reg.actions_for_all(new)
    return fired, plans


async def _submit(bootstrap: str, observations: list[Observation], firing_ids: set[str],
                  wait: float) -> list[HealingRecord]:
    """Send the observations to the worker owning each component (healing.observations) and wait for their
    firings, actions and effects on healing.history."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for obs in observations:
            await producer.send_and_wait(T.HEALING_OBSERVATIONS, orjson.dumps(obs.model_dump(
                mode="json", exclude_none=True)), key=f"{obs.tenant_id}|{obs.component}".encode())
    finally:
        await producer.stop()
    deadline = time.monotonic() + wait
    while True:
        recs = [r for r in await read_history_topic(bootstrap) if r.detail.get("firing_id") in firing_ids]
        if {str(r.detail.get("firing_id")) for r in recs if r.kind == "trigger"} >= firing_ids \
                or time.monotonic() >= deadline:
            return recs
        await asyncio.sleep(1.0)


def _executions(input_path: Path | None) -> tuple[str, list[ExecutionMetrics], int]:
    if input_path is None:
        bootstrap = _bootstrap()
        values = asyncio.run(read_topic_values(bootstrap, T.EXECUTIONS))
        errors = 0
        records: list[ExecutionMetrics] = []
        for v in values:
            try:
                records.append(ExecutionMetrics.model_validate_json(v))
            except ValidationError:
                errors += 1
        return f"{T.EXECUTIONS}@{bootstrap}", records, errors
    if not input_path.exists():
        _fail(f"no execution metrics at {input_path}; pass --input FILE.jsonl, or none to read {T.EXECUTIONS}")
    if input_path.is_dir():
        _fail(f"{input_path} is a directory; --input takes a JSONL file")
    errs: list[str] = []
    recs, _ = read_execution_metrics(input_path, 0, errs)
    return str(input_path), recs, len(errs)


@app.command()
def check(
    input_path: Annotated[Path | None, typer.Option("--input", help="Execution-metrics JSONL "
                                                    f"(default: the {T.EXECUTIONS} topic).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate here only: nothing is sent, no effect.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for the workers' results.")] = 30.0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the triggers over execution metrics. Without --dry-run the observations that fire are handed to
    the workers (healing.observations), which apply the group's cooldowns and the actions' effects; the
    result is what they recorded on healing.history. Firings already in the history are not sent again."""
    cfg = _config(config)
    source, records, invalid = _executions(input_path)
    bootstrap = get_settings().kafka_bootstrap_servers
    if not dry_run:
        bootstrap = _bootstrap()
    seen = {str(r.detail.get("firing_id")) for r in _read_history(bootstrap) if r.kind == "trigger"} \
        if bootstrap else set()
    fired, plans = _run_check(records, cfg, seen)
    firings = [f for _, fs in fired for f in fs]
    recorded: list[HealingRecord] = []
    if not dry_run and firings and bootstrap:
        recorded = asyncio.run(_submit(bootstrap, [o for o, _ in fired], {f.firing_id for f in firings}, wait))
    result = {"input": source, "executions": len(records), "invalid_lines": invalid,
              "triggers_fired": len(firings), "actions_planned": len(plans), "dry_run": dry_run,
              "recorded": {k: sum(r.kind == k for r in recorded) for k in ("trigger", "action", "effect")},
              "firings": [f.model_dump(mode="json", exclude={"evidence"}) for f in firings],
              "actions": [p.model_dump(mode="json", exclude={"handoff"}) for p in plans],
              "effects": [r.model_dump(mode="json") for r in recorded if r.kind == "effect"]}
    if as_json:
        _emit_json(result)
        return
    console.print(f"{len(records)} executions from {source}" + (f" ({invalid} invalid skipped)" if invalid else ""))
    ft = Table(title=f"triggers fired: {len(firings)}")
    for col in ("time", "trigger", "tenant", "component", "value", "threshold", "role"):
        ft.add_column(col)
    for f in firings:
        ft.add_row(f.timestamp.isoformat(), f.trigger, f.tenant_id, f.component, f"{f.value:.4g}",
                   f"{f.threshold:g}", role_of(f.target_agent))
    at = Table(title=f"actions: {len(plans)}")
    for col in ("time", "action", "priority", "trigger", "component", "effect"):
        at.add_column(col)
    for p in plans:
        eff = EFFECTS.get(p.action)
        at.add_row(p.timestamp.isoformat(), p.action, p.priority, p.trigger, p.component, eff.summary if eff else "-")
    console.print(ft)
    console.print(at)
    if not dry_run:
        console.print(f"recorded by the workers: {result['recorded']}")


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the newest N records.")] = 20,
    kind: Annotated[str | None, typer.Option("--kind", help="trigger, action or effect.")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Also write the whole history as JSONL "
                                                "(triggers-/actions-/effects-YYYYMMDD.jsonl) into DIR.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The newest firings, actions and effects of the whole group (the healing.history topic)."""
    if kind not in (None, "trigger", "action", "effect"):
        _fail(f"--kind must be 'trigger', 'action' or 'effect', not {kind!r}")
    everything = _read_history(_bootstrap())
    if export is not None and not HealingHistory(export).append(everything):
        _fail(f"could not write the export to {export}")
    records = [r for r in everything if kind is None or r.kind == kind][-limit:]
    if as_json:
        _emit_json([r.model_dump(mode="json") for r in records])
        return
    table = Table(title=f"self-healing history (newest {limit} of {len(everything)})")
    for col in ("time", "kind", "name", "tenant", "component", "firing", "detail"):
        table.add_column(col)
    for r in records:
        d = r.detail
        detail = d.get("summary") or d.get("target_agent") or ""
        if r.kind == "effect":
            detail = f"{detail} → {d.get('cycle_id') or d.get('config_key') or ''}"
        table.add_row(r.timestamp.isoformat(), r.kind, r.name, r.tenant_id, r.component,
                      str(d.get("firing_id", "")), str(detail))
    console.print(table)
