"""One lab run of three cases through the real loop: Tansu, moto, a worker and the connectors, scored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
import yaml

from kaizen.lab.report import write_json
from kaizen.lab.runner import Lab, namespaces
from kaizen.lab.schema import load_cases
from kaizen.lab.scoring import score_case, totals
from kaizen.lab.stack import lab_stack
from streams.settings import get_settings

pytestmark = pytest.mark.integration

CASES = {
    "it-error-burst": {
        "seed": 3, "workload": {"rps": 120}, "observe_seconds": 120,
        "services": [{"name": "profile", "base_latency_ms": 14, "backend_latency_ms": 20,
                      "knobs": {"max_retries": 1, "pool_size": 10}}],
        "fault": {"kind": "error_burst", "service": "profile", "onset_seconds": 45, "failure_per_attempt": 0.3,
                  "message": "identity provider answered 503 Service Unavailable"},
        "oracle": {"fault": True, "component": "profile", "metric": "error_rate", "fixable": True,
                   "fix": [{"knob": "max_retries", "direction": "up"}]},
    },
    "it-leak-behind-api": {
        "seed": 4, "workload": {"rps": 100}, "observe_seconds": 120,
        "services": [{"name": "api", "backend_latency_ms": 0, "calls": ["accounts"], "knobs": {"concurrency": 16}},
                     {"name": "accounts", "backend_latency_ms": 25, "connections_per_100rps": 7,
                      "knobs": {"pool_size": 10, "max_retries": 1}}],
        "fault": {"kind": "connection_leak", "service": "accounts", "onset_seconds": 45, "rate_per_second": 2,
                  "max_leaked": 7},
        "oracle": {"fault": True, "component": "accounts", "metric": "error_rate", "fixable": True,
                   "fix": [{"knob": "pool_size", "direction": "up"}]},
    },
    "it-control": {
        "seed": 5, "workload": {"rps": 150}, "observe_seconds": 120, "onset_seconds": 45,
        "services": [{"name": "feed", "working_set": 500, "knobs": {"cache_size": 1024, "pool_size": 10}}],
        "oracle": {"fault": False},
    },
}


def test_three_cases_through_tansu_and_moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, body in CASES.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **body}))
    cases = load_cases([tmp_path])
    monkeypatch.chdir(tmp_path)  # the lab's data dir (.kaizen/lab) and process logs land here
    for k in ("KAFKA_BOOTSTRAP_SERVERS", "AWS_ENDPOINT_URL", "KAIZEN_DATA_DIR"):
        monkeypatch.delenv(k, raising=False)
    lines: list[str] = []
    env_before = dict(os.environ)
    try:
        with lab_stack(namespaces(cases)) as (settings, dead):
            records = asyncio.run(Lab(settings, cases, lines.append).run(None, dead))
    finally:
        os.environ.clear()
        os.environ.update(env_before)
        get_settings.cache_clear()  # the lab's settings must not leak into later tests
    scores = {s.name: s for s in (score_case(r) for r in records)}
    burst, leak, control = scores["it-error-burst"], scores["it-leak-behind-api"], scores["it-control"]
    # the fault's own error lines reach the pattern miner: detected on the right component
    assert burst.detected and burst.time_to_detect is not None and burst.time_to_detect < 90, lines
    assert leak.detected, lines
    # the model saw the fault (noise-free figures before and during it)
    assert burst.pre_fault is not None and burst.faulted is not None and burst.faulted > 5 * burst.pre_fault
    # nothing was wrong with the control: the loop must not change it
    assert control.control_improvements == 0, lines
    assert all(s.harmful_kept == 0 for s in scores.values()), [s.notes for s in scores.values()]
    every = [r for r in records for i in r.improvements]
    assert all(i.component in {"profile", "api", "accounts", "feed"} for r in records for i in r.improvements)
    report = tmp_path / "lab.json"
    t = totals(list(scores.values()))
    write_json(report, list(scores.values()), t, {})
    data = orjson.loads(report.read_bytes())
    assert data["totals"]["fault_cases"] == 2 and data["totals"]["controls"] == 1 and len(data["cases"]) == 3
    assert data["reference"]["localization"] == "46–62 %"
    assert len(every) == t["improvements"]
