"""The fault-case format: the shipped library validates; a bad case file gives an error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaizen.lab.schema import (
    FAULT_KINDS,
    CaseError,
    json_schema,
    library_dir,
    load_case,
    load_cases,
    parse_case,
)

GOOD = {
    "name": "tiny", "workload": {"rps": 50},
    "services": [{"name": "api", "knobs": {"pool_size": 10}, "connections_per_100rps": 5}],
    "fault": {"kind": "connection_leak", "service": "api", "rate_per_second": 1, "max_leaked": 6},
    "oracle": {"fault": True, "component": "api", "metric": "error_rate", "fixable": True,
               "fix": [{"knob": "pool_size", "direction": "up"}]},
}


def _bad(**patch: object) -> str:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for path, value in patch.items():
        node = data
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    with pytest.raises(CaseError) as err:
        parse_case(data, "bad.yaml")
    return str(err.value)


def test_good_case_parses_with_defaults() -> None:
    c = parse_case(GOOD)
    assert c.tenant_id == "lab_tiny" and c.onset == 60.0 and c.fault is not None and c.fault.kind == "connection_leak"


def test_shipped_library_is_valid_and_wide_enough() -> None:
    cases = load_cases([library_dir()])
    faults = [c for c in cases if c.oracle.fault]
    controls = [c for c in cases if not c.oracle.fault]
    assert len(cases) >= 15 and len(controls) >= 3
    assert len({c.fault.kind for c in faults if c.fault}) >= 6
    assert {c.workload.shape for c in controls} >= {"constant", "daily"}
    assert any(c.fault is not None and c.fault.kind == "noop_deploy" for c in controls)


@pytest.mark.parametrize(("patch", "field"), [
    ({"services__0__knobs": {"pool_sise": 10}}, "services[0].knobs: Value error, unknown knob 'pool_sise'"),
    ({"services__0__base_latency_ms": -1}, "services[0].base_latency_ms"),
    ({"fault__kind": "meteor"}, "fault: "),
    ({"fault__rate_per_second": "fast"}, "fault.rate_per_second"),
    ({"fault__service": "nope"}, "fault.service: 'nope' is not a service"),
    ({"oracle__component": "web"}, "oracle.component: 'web' is not a service"),
    ({"oracle__metric": "speed"}, "oracle.metric"),
    ({"oracle__fix": []}, "fixable: true needs the knob changes in `fix`"),
    ({"workload__shape": "spiky"}, "workload.shape"),
    ({"name": "Bad Name"}, "name: Value error, lower-case"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
])
def test_bad_case_names_the_field(patch: dict[str, object], field: str) -> None:
    message = _bad(**patch)
    assert "bad.yaml" in message and field in message, message


def test_fault_kind_error_lists_the_kinds() -> None:
    message = _bad(fault__kind="meteor")
    assert all(k in message for k in ("cache_pressure", "error_burst")), message
    assert len(FAULT_KINDS) >= 6


def test_control_with_a_fix_is_refused() -> None:
    data = {**GOOD, "fault": None, "oracle": {"fault": False, "fixable": True,
                                              "fix": [{"knob": "pool_size", "direction": "up"}]}}
    with pytest.raises(CaseError, match="no-fault control has nothing to fix"):
        parse_case(data, "c.yaml")


def test_cyclic_calls_are_refused() -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["services"] = [{"name": "a", "calls": ["b"]}, {"name": "b", "calls": ["a"]}]
    data["fault"]["service"] = "a"
    data["oracle"] = {"fault": False}
    with pytest.raises(CaseError, match="cycle"):
        parse_case(data, "c.yaml")


def test_files_yaml_errors_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(CaseError, match="broken.yaml: not valid YAML"):
        load_case(tmp_path / "broken.yaml")
    (tmp_path / "broken.yaml").unlink()
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text(yaml.safe_dump(GOOD))
    with pytest.raises(CaseError, match="share the name tiny"):
        load_cases([tmp_path])
    with pytest.raises(CaseError, match="no case files"):
        load_cases([tmp_path / "empty"]) if (tmp_path / "empty").mkdir() is None else None


def test_json_schema_exports_the_fault_kinds() -> None:
    schema = json_schema()
    text = str(schema)
    assert schema["title"] == "Case" and all(k in text for k in FAULT_KINDS)
