"""Time from a bad change's degradation onset to its rollback being applied, in the demo's bad-change
scenario (`kaizen demo --scenario bad-change --exit-after-cycle --report`), beside its own telemetry lag."""

from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import start_process
from kaizen.embedded import free_port

TARGET_S = 10.0


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _secs(later: Any, earlier: Any) -> float | None:
    a, b = _ts(later), _ts(earlier)
    return round((a - b).total_seconds(), 2) if a and b else None


def figures(scenario: dict[str, Any]) -> dict[str, Any]:
    """The rollback timings of one scenario timeline of the demo report."""
    lag = (scenario.get("telemetry_lag_seconds") or {}).get("p50")
    onset = scenario.get("deployed_at")  # the bad change starts degrading the service when it is applied
    full = scenario.get("full_deployed_at")
    out = {
        "verdict": scenario.get("verdict"), "met_expectation": scenario.get("met_expectation"),
        "onset_to_rollback_s": _secs(scenario.get("rollback_at"), onset),
        "onset_to_verdict_s": _secs(scenario.get("verdict_at"), onset),
        "full_rollout_to_rollback_s": _secs(scenario.get("rollback_at"), full),
        "fault_to_rollback_s": _secs(scenario.get("rollback_at"), scenario.get("fault_injected_at")),
        "anchor_telemetry_lag_p50_s": lag,
        "latency_before_ms": scenario.get("latency_before_ms"),
        "latency_during_change_ms": scenario.get("latency_during_change_ms"),
        "latency_after_ms": scenario.get("latency_after_ms"),
    }
    # "after the degradation is visible": the degraded points reach kaizen one telemetry lag after onset
    if out["onset_to_rollback_s"] is not None:
        out["visible_to_rollback_s"] = round(out["onset_to_rollback_s"] - (lag or 0.0), 2)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    timeout = 300.0
    with tempfile.TemporaryDirectory(prefix="kaizen-rollback-") as tmp:
        report = Path(tmp) / "report.json"
        started = time.monotonic()
        proc = start_process(["-m", "kaizen.cli", "demo", "--scenario", "bad-change", "--exit-after-cycle",
                              "--report", str(report)],
                             {"KAIZEN_DATA_DIR": str(Path(tmp) / "data"), "SELF_BUILDING_MCP_PORT": str(free_port())},
                             "rollback-demo")
        try:
            proc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass  # stopped below; the report (if any) says how far it got
        finally:
            proc.stop()
        wall = round(time.monotonic() - started, 1)
        if not report.exists():
            return {"benchmark": "rollback_time", "status": "error", "error": "the demo wrote no report",
                    "exit_code": proc.proc.returncode, "log": str(proc.log_path), "wall_seconds": wall}
        data = orjson.loads(report.read_bytes())
    scenario = data.get("scenarios", {}).get("bad-change", {})
    f = figures(scenario)
    value = f.get("visible_to_rollback_s")
    return {"benchmark": "rollback_time", "scenario": "bad-change", "exit_code": proc.proc.returncode,
            "wall_seconds": wall, **f, "target_s": TARGET_S,
            "meets_target": value is not None and value < TARGET_S,
            "method": "one run of the demo's bad-change scenario (simulated service on moto, embedded broker, "
                      "one worker); onset = the change applied (deployed_at)"}


if __name__ == "__main__":
    import sys

    print(orjson.dumps(run(quick="--quick" in sys.argv), option=orjson.OPT_INDENT_2).decode())
