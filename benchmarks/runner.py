"""Runs the benchmarks (each measures its anchor in the same run), prints and writes their JSON."""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import machine

# name -> module with `def run(quick: bool = False) -> dict`; order: cheap in-process ones first.
BENCHMARKS: dict[str, str] = {
    "scoring_throughput": "benchmarks.scoring_throughput",
    "detector_memory": "benchmarks.detector_memory",
    "pattern_throughput": "benchmarks.pattern_throughput",
    "pipeline_throughput": "benchmarks.pipeline_throughput",
    "detection_latency": "benchmarks.detection_latency",
    "mcp_load": "benchmarks.mcp_load",
    "rollback_time": "benchmarks.rollback_time",
    "nab_quality": "benchmarks.nab_quality",
    "loghub_quality": "benchmarks.loghub_quality",
    "fault_lab": "benchmarks.fault_lab",  # the whole loop on the fault library (docs/lab.md), beside AIOpsLab
}


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """One benchmark's result; a module not present in this build is reported as missing, not hidden."""
    module_name = BENCHMARKS[name]
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return {"benchmark": name, "status": "missing", "module": module_name}
        raise
    try:
        result = dict(module.run(quick=quick))
    except Exception as exc:  # noqa: BLE001 - one failing benchmark must not lose the others' figures
        return {"benchmark": name, "status": "error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:], "seconds": round(time.perf_counter() - started, 2)}
    result.setdefault("benchmark", name)
    result.setdefault("status", "ok")
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_all(quick: bool = False, output: Path | str = "bench.json", names: list[str] | None = None) -> dict[str, Any]:
    """Run the named benchmarks (all by default) and write {machine, quick, results: {name: result}}."""
    selected = names or list(BENCHMARKS)
    for n in selected:
        if n not in BENCHMARKS:
            raise KeyError(n)
    out: dict[str, Any] = {"quick": quick, "machine": machine(), "started_at": time.time(), "results": {}}
    path = Path(output)
    for name in selected:
        print(f"== {name} ...", file=sys.stderr, flush=True)
        res = run_one(name, quick)
        out["results"][name] = res
        shown = {k: v for k, v in res.items() if k != "traceback"}
        print(orjson.dumps(shown, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode(), flush=True)
        # written after every benchmark, so an interrupted run keeps what it measured
        out["seconds"] = round(time.time() - out["started_at"], 2)
        path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    statuses = {n: r.get("status") for n, r in out["results"].items()}
    print(f"wrote {path}: {statuses}", file=sys.stderr)
    return out


if __name__ == "__main__":
    run_all(quick="--quick" in sys.argv, output=sys.argv[-1] if sys.argv[-1].endswith(".json") else "bench.json")
