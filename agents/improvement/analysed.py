"""How much telemetry the worker group accepted while a cycle ran: the cycle report's telemetry_analyzed."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

KINDS = {"metric": "metrics", "log": "logs", "event": "events"}


def group_totals(heartbeats: Mapping[str, Mapping[str, Any]], own_pid: str,
                 own_counts: Mapping[str, int]) -> dict[str, int]:
    """Records accepted by dedup so far, per kind, over every worker: the others' last heartbeat
    (processed_by_kind) plus this worker's live counters (its own heartbeat is up to 5 s old)."""
    totals = dict.fromkeys(KINDS.values(), 0)
    for pid, detail in heartbeats.items():
        if pid == own_pid:
            continue
        by_kind = detail.get("processed_by_kind")
        for kind, n in (by_kind.items() if isinstance(by_kind, Mapping) else ()):
            if kind in KINDS and isinstance(n, int | float):
                totals[KINDS[kind]] += int(n)
    for kind, n in own_counts.items():
        if kind in KINDS:
            totals[KINDS[kind]] += int(n)
    return totals


def since(start: Mapping[str, int], end: Mapping[str, int]) -> dict[str, int]:
    """Per kind, what was accepted between two totals (a restarted worker's counter never counts negative)."""
    return {k: max(0, int(end.get(k, 0)) - int(start.get(k, 0))) for k in KINDS.values()}


def current_totals(heartbeats: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """group_totals for this worker process (same process id as its heartbeat, agents/status.py)."""
    from agents.ingest.agent import STATS
    from streams.runtime import runtime

    pid = runtime.process_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    return group_totals(heartbeats, pid, dict(STATS["processed"]))
