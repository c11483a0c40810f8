"""The fault lab's rates and time percentiles (kaizen lab run on the shipped library) beside AIOpsLab's figures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

# Quick runs take one case per kind of outcome: a fixable fault, an unfixable one, a control.
QUICK_CASES = ("error-burst-profile.yaml", "bad-deploy-cart.yaml", "control-noop-deploy.yaml")
AIOPSLAB = {"detection": "100 %", "localization": "46–62 %", "root_cause": "36–46 %", "mitigation": "0–55 %",
            "source": "AIOpsLab (Chen et al., 2025), best agent"}


def run(quick: bool = False) -> dict[str, Any]:
    """`kaizen lab run` in a child process (its own embedded stack), the report's totals and per-case scores."""
    from kaizen.lab.schema import library_dir

    cases = [str(library_dir() / c) for c in QUICK_CASES] if quick else [str(library_dir())]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "lab.json"
        env = {k: v for k, v in os.environ.items()
               if k not in ("KAFKA_BOOTSTRAP_SERVERS", "AWS_ENDPOINT_URL", "KAIZEN_DATA_DIR")}
        proc = subprocess.run([sys.executable, "-m", "kaizen.cli", "lab", "run", *cases, "--report", str(report)],
                              env=env, cwd=tmp, capture_output=True, text=True, timeout=1200, check=False)
        if proc.returncode != 0 or not report.is_file():
            raise RuntimeError(f"kaizen lab run exited {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}")
        data = orjson.loads(report.read_bytes())
    return summarize(data)


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """A lab report's totals and per-case scores beside AIOpsLab's figures."""
    t = data["totals"]
    return {
        "cases": t["cases"], "fault_cases": t["fault_cases"], "mitigable_cases": t["mitigable_cases"],
        "controls": t["controls"],
        "kaizen": {"detection": t["detection_rate"], "localization": t["localization_rate"],
                   "mitigation": t["mitigation_rate"], "right_knob": t["right_knob_rate"],
                   "time_to_detect_s": t["time_to_detect_s"], "time_to_mitigate_s": t["time_to_mitigate_s"],
                   "rollbacks": t["rollbacks"], "harmful_kept": t["harmful_kept"],
                   "control_improvements": t["control_improvements"]},
        "aiopslab": AIOPSLAB,
        "per_case": {c["name"]: {k: c[k] for k in ("detected", "localized", "mitigated", "time_to_detect",
                                                    "time_to_mitigate", "rollbacks", "harmful_kept",
                                                    "control_improvements")} for c in data["cases"]},
        "lab_wall_seconds": t.get("wall_seconds"),
    }
