"""The lean metric path must agree with the MetricDataPoint model: same points, same rejections."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.codec import decode_metrics_lean, decode_telemetry
from streams.metric_codec import lean_from_model, lean_metric, trusted_lean
from streams.records import MetricDataPoint

T0 = 1_700_000_000

_any_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                        st.text(max_size=5))
_timestamps = st.one_of(
    st.integers(-3 * 10**10, 3 * 10**12),  # seconds, and milliseconds (> 2e10) the model reads otherwise
    st.floats(min_value=0, max_value=3e10, allow_nan=False),
    st.sampled_from(["2026-11-23T16:52:43Z", "2026-11-23T16:52:43+02:00", "2026-11-23T16:52:43.123456Z",
                     "2026-11-23T16:52:43.5-05:30", "2026-11-23T16:52:43", "2026-11-23", "20261123T165243Z",
                     "2026-11-23 16:52:43Z", "2026-11-23T16:52:43.1234567Z", "2026-13-23T16:52:43Z", "yesterday"]),
    _any_scalar,
)
_dims = st.one_of(st.dictionaries(st.sampled_from(["service", "component", "FunctionName", "region", "variant"]),
                                  st.one_of(st.text(max_size=6), st.integers(0, 3), st.none()), max_size=3),
                  _any_scalar)


@st.composite
def raw_metric(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    fields = {
        "metric_name": st.one_of(st.sampled_from(["Latency", "ErrorRate", "Invocations", ""]), _any_scalar),
        "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**9, 10**9),
                           st.sampled_from(["1.5", "x", True]), st.none()),
        "timestamp": _timestamps,
        "tenant_id": st.one_of(st.sampled_from(["acme", "globex", ""]), _any_scalar),
        "namespace": st.one_of(st.sampled_from(["AWS/Lambda", ""]), _any_scalar),
        "statistic": st.one_of(st.sampled_from(["Average", "p99"]), _any_scalar),
        "unit": st.one_of(st.sampled_from(["Milliseconds", "Percent"]), _any_scalar),
        "dimensions": _dims,
        "event_id": st.one_of(st.sampled_from(["", "evt-1"]), _any_scalar),
        "extra": _any_scalar,
    }
    required = {"metric_name", "value", "timestamp", "tenant_id"}
    for name, strategy in fields.items():
        if name in required and draw(st.integers(0, 9)) > 0 or name not in required and draw(st.booleans()):
            rec[name] = draw(strategy)
    return rec


def _model(item: dict[str, Any]) -> MetricDataPoint | None:
    try:
        return MetricDataPoint.model_validate(item)
    except ValidationError:
        return None


@settings(max_examples=1500, deadline=None)
@given(raw_metric())
def test_lean_path_never_disagrees_with_the_model(item: dict[str, Any]) -> None:
    lean = lean_metric(item)
    model = _model(item)
    if lean is not None:
        assert model is not None, f"lean path accepted what the model rejects: {item}"
        assert lean == lean_from_model(model)


def _usual(i: int) -> dict[str, Any]:
    return {"metric_name": "Latency", "value": 100 + i, "unit": "Milliseconds", "timestamp": T0 + 60 * i,
            "tenant_id": "acme", "namespace": "Shop", "dimensions": {"service": "checkout", "region": "eu"}}


def test_records_of_the_usual_shape_take_the_lean_path_with_the_models_ids() -> None:
    for item in (_usual(1), {**_usual(2), "timestamp": "2026-11-23T16:52:43Z"}, {**_usual(3), "value": 1.25}):
        lean = lean_metric(item)
        assert lean is not None, item
        model = MetricDataPoint.model_validate(item)
        assert lean["event_id"] == model.event_id and lean["event_id"].startswith("m-")
        assert lean["series"] == model.series_key() == "acme|Shop|Latency|Average|region=eu,service=checkout"
        assert lean["component"] == "checkout"
        assert lean["timestamp"] == model.timestamp.timestamp()


def test_unusual_but_valid_records_go_through_the_model() -> None:
    ms = {**_usual(1), "timestamp": (T0 + 60) * 1000}  # milliseconds: the model's reading decides
    assert lean_metric(ms) is None
    assert lean_metric({**_usual(1), "value": "1.5"}) is None
    got = decode_metrics_lean(orjson.dumps({"records": [ms, {**_usual(2), "value": "1.5"}]}), topic="t")
    assert not got.dead and [p["timestamp"] for p in got.records] == [T0 + 60.0, T0 + 120.0]
    assert got.records[1]["value"] == 1.5


def test_lean_decode_and_model_decode_agree_on_a_mixed_batch() -> None:
    items: list[Any] = [_usual(1), {**_usual(2), "value": None}, "nope", _usual(3), {**_usual(4), "tenant_id": ""},
                        {**_usual(5), "timestamp": "2026-11-23T16:52:43"}]
    raw = orjson.dumps({"records": items})
    lean = decode_metrics_lean(raw, topic="telemetry.metrics.raw", partition=1, offset=7)
    ref = decode_telemetry("metric", raw, topic="telemetry.metrics.raw", partition=1, offset=7)
    assert [p["event_id"] for p in lean.records] == [r.event_id for r in ref.records]
    assert [(d.index_in_batch, d.reason) for d in lean.dead] == [(d.index_in_batch, d.reason) for d in ref.dead]
    assert [d.index_in_batch for d in lean.dead] == [1, 2, 4]


def test_clean_records_of_dedup_are_trusted_and_others_checked() -> None:
    lean = lean_metric(_usual(1))
    assert lean is not None and trusted_lean(lean) is lean
    assert trusted_lean(MetricDataPoint.model_validate(_usual(2)).model_dump(mode="json")) == lean_metric(_usual(2))
    assert trusted_lean({"metric_name": "Latency"}) is None


def test_history_flag_travels_on_both_paths_and_only_when_set() -> None:
    """A point the connector read back at discovery keeps `history` through dedup; live points carry no key."""
    hist = {**_usual(3), "history": True}
    assert lean_metric(hist)["history"] is True  # type: ignore[index]
    assert lean_from_model(MetricDataPoint.model_validate(hist))["history"] is True
    assert "history" not in lean_metric(_usual(3))  # type: ignore[operator]
    assert "history" not in lean_from_model(MetricDataPoint.model_validate(_usual(3)))
    assert "history" not in lean_metric({**_usual(3), "history": "yes"})  # type: ignore[operator]
