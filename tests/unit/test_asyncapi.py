"""docs/asyncapi.yaml: generated from the topics and records, up to date, valid for the AsyncAPI CLI, and the
records kaizen writes validate against their message schemas."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kaizen.asyncapi import document, message_schema, render
from streams import topics as t
from streams.records import ImprovementEvent, MetricDataPoint, TelemetryInsight

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "asyncapi.yaml"
CLI = ROOT / ".kaizen" / "tools" / "node_modules" / ".bin" / "asyncapi"


def test_docs_asyncapi_is_up_to_date() -> None:
    assert DOC.is_file(), "docs/asyncapi.yaml is missing: run `kaizen asyncapi -o docs/asyncapi.yaml`"
    assert DOC.read_text(encoding="utf-8") == render(), \
        "docs/asyncapi.yaml is out of date with streams/topics.py or streams/records.py: " \
        "run `kaizen asyncapi -o docs/asyncapi.yaml`"


def test_every_topic_is_a_channel_with_key_and_compaction() -> None:
    doc = document()
    by_address = {c["address"]: c for c in doc["channels"].values()}
    assert set(by_address) == {s.name for s in t.TOPICS}
    for spec in t.TOPICS:
        ch = by_address[spec.name]
        policy = ch["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"]
        assert policy == (["compact"] if spec.compacted else ["delete"]), spec.name
        msg = doc["components"]["messages"][next(iter(ch["messages"]))]
        assert msg["bindings"]["kafka"]["key"]["description"] == spec.key
    assert len(doc["operations"]) == len(t.TOPICS)


def _valid(topic: str, value: Any) -> bool:
    try:
        jsonschema.validate(value, message_schema(document(), topic))
    except jsonschema.ValidationError:
        return False
    return True


def test_records_validate_against_their_message_schemas() -> None:
    now = datetime.now(UTC)
    event = ImprovementEvent(event_id="e1", improvement_id="imp-1", status="monitoring", timestamp=now,
                             data={"deployment": {"stage": "canary"}}, tenant_id="acme")
    assert _valid(t.IMPROVEMENT_EVENTS, json.loads(event.to_bytes()))
    assert not _valid(t.IMPROVEMENT_EVENTS, {**json.loads(event.to_bytes()), "status": "exploded"})
    assert not _valid(t.IMPROVEMENT_EVENTS, {"status": "monitoring"})  # no improvement_id
    point = {"metric_name": "Latency", "value": 412.5, "timestamp": "2026-11-23T14:45:00Z", "tenant_id": "a"}
    assert _valid(t.RAW_TOPICS["metric"], point)
    assert _valid(t.RAW_TOPICS["metric"], {"records": [point, point]})
    assert not _valid(t.RAW_TOPICS["metric"], {**point, "value": "high"})
    insight = TelemetryInsight(insight_type="anomaly", severity="high", affected_component="api",
                               confidence_score=0.9, timestamp=now, description="x", affected_tenants=["a"],
                               tenant_id="a")
    assert _valid(t.INSIGHTS, json.loads(insight.to_bytes()))
    lean = MetricDataPoint.model_validate(point).model_dump(mode="json")
    assert _valid(t.CLEAN_TOPICS["metric"], {"records": [{**lean, "timestamp": 1.7e9, "series": "s",
                                                          "component": "api"}]})
    command = {"command_id": "c1", "kind": "trigger_cycle", "timestamp": now.isoformat(), "actor": "alice",
               "roles": ["operator"], "tenant_id": "acme"}
    assert _valid(t.COMMANDS, command)
    assert not _valid(t.COMMANDS, {**command, "kind": "launch_missiles"})


def test_asyncapi_cli_validates_the_document(tmp_path: Path) -> None:
    """The AsyncAPI CLI (`make asyncapi-cli` installs it; `make test` does first) accepts the document."""
    if not CLI.exists():
        pytest.fail(f"the AsyncAPI CLI is not installed at {CLI}: run `make asyncapi-cli` (npm)")
    analytics = tmp_path / "analytics.json"  # no usage tracking calls from the suite
    analytics.write_text('{"analyticsEnabled":"false","infoMessageShown":"true","userID":"kaizen-tests"}')
    env = {**os.environ, "CI": "true", "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics)}
    ok = subprocess.run([str(CLI), "validate", str(DOC)], capture_output=True, text=True, env=env, timeout=180)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "is valid" in ok.stdout + ok.stderr
    broken = yaml.safe_load(DOC.read_text(encoding="utf-8"))
    del broken["channels"][next(iter(broken["channels"]))]["address"]
    broken["operations"]["bogus"] = {"action": "eat", "channel": {"$ref": "#/channels/nowhere"}}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    bad = subprocess.run([str(CLI), "validate", str(tmp_path / "broken.yaml")], capture_output=True, text=True,
                         env=env, timeout=180)
    assert bad.returncode != 0, "the CLI accepted a broken document: the check above proves nothing"
    # Consumers in other languages generate their types from it (README, Topics): the records come out.
    gen = subprocess.run([str(CLI), "generate", "models", "typescript", str(DOC), "-o", str(tmp_path / "ts")],
                         capture_output=True, text=True, env=env, timeout=180)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    made = {p.stem for p in (tmp_path / "ts").glob("*.ts")}
    assert {"ImprovementEvent", "TelemetryInsight", "ImprovementOpportunity", "MetricDataPoint"} <= made, made
