"""The columnar metric decoder gives exactly the per-point decoder's points and dead letters."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import metric_columns
from streams.codec import decode_metrics_lean
from streams.contract import Limits
from streams.metric_columns import decode_metric_columns

NOW = 1_700_000_000.0
LIMITS = Limits(max_identifier_length=40, max_dimension_value_length=12, max_dimensions=3)

_ident = st.text(alphabet="abcXYZ09-_|=", min_size=0, max_size=45)
_value = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 0.25, 1.0, 1.5, -0.5, 2**60 + 1, True, None, "1.5"]))
_ts = st.one_of(st.integers(int(NOW) - 3 * 86400, int(NOW) + 3 * 3600),
                st.floats(NOW - 86400, NOW + 86400),
                st.sampled_from([NOW, NOW + 0.5, 1e13, -5, "2023-11-14T22:13:20Z", "2023-11-14T22:13:20.5+00:00",
                                 "2023-11-14 22:13:20", "yesterday", None, 1_000_000_000]))
_dims = st.one_of(st.dictionaries(st.text(alphabet="abk", max_size=45), st.one_of(_ident, st.integers(-10**9, 10**9)),
                                  max_size=4), st.none(), st.just("svc"))


@st.composite
def records(draw: st.DrawFn, usual: bool) -> dict[str, Any]:
    """A metric record; `usual` ones are drawn mostly from what the columnar path accepts."""
    rec: dict[str, Any] = {
        "metric_name": draw(st.sampled_from(["Latency", "ErrorRate", "CacheHitRatio", "CPUUtilization"]))
        if usual else draw(st.one_of(_ident, st.none())),
        "tenant_id": draw(st.sampled_from(["acme", "t-1"])) if usual else draw(st.one_of(_ident, st.integers(-10**9, 10**9))),
        "value": draw(st.floats(-1e6, 1e6) | st.integers(-5, 5)) if usual else draw(_value),
        "timestamp": draw(st.integers(int(NOW) - 86400, int(NOW)) | st.sampled_from(["2023-11-14T22:13:20Z"]))
        if usual else draw(_ts),
    }
    for field, default in (("unit", ["Milliseconds", "None", "Percent", ""]), ("namespace", ["AWS/X", ""]),
                           ("statistic", ["Average", "p99"]), ("event_id", ["", "e-1", "e-2"])):
        if draw(st.booleans()):
            rec[field] = draw(st.sampled_from(default)) if usual else draw(st.one_of(_ident, st.integers(-10**9, 10**9)))
    if draw(st.booleans()):
        rec["dimensions"] = {"service": draw(st.sampled_from(["a", "b"]))} if usual else draw(_dims)
    if draw(st.integers(0, 4)) == 0:
        rec["history"] = draw(st.sampled_from([True, False, 1]))
    return rec


def _same(raw: bytes) -> bool:
    """Both decoders on one message; returns whether the columnar path was taken."""
    before = metric_columns.STATS["columnar"]
    fast = decode_metric_columns(raw, topic="t", partition=1, offset=2, now=NOW, limits=LIMITS)
    ref = decode_metrics_lean(raw, topic="t", partition=1, offset=2, now=NOW, limits=LIMITS)
    assert orjson.dumps(fast.records) == orjson.dumps(ref.records)
    assert [d.model_dump(exclude={"timestamp", "event_id"}) for d in fast.dead] == \
        [d.model_dump(exclude={"timestamp", "event_id"}) for d in ref.dead]
    return metric_columns.STATS["columnar"] > before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(usual=True), min_size=1, max_size=20))
def test_usual_envelopes_decode_alike(recs: list[dict[str, Any]]) -> None:
    _same(orjson.dumps({"records": recs}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(records(usual=True), records(usual=False)), min_size=0, max_size=12))
def test_any_envelope_decodes_alike(recs: list[dict[str, Any]]) -> None:
    _same(orjson.dumps({"records": recs}))


def test_the_usual_envelope_takes_the_columnar_path() -> None:
    recs = [{"metric_name": "Latency", "value": 100 + i, "unit": "Milliseconds", "timestamp": int(NOW) - 60 * i,
             "tenant_id": "acme", "namespace": "AWS/ApiGateway", "dimensions": {"service": f"s{i % 3}"}}
            for i in range(50)]
    assert _same(orjson.dumps({"records": recs}))
    recs[7]["value"] = "oops"  # one bad record: the whole envelope goes per point, the record dead-lettered
    assert not _same(orjson.dumps({"records": recs}))
    bad = decode_metric_columns(orjson.dumps({"records": recs}), topic="t", now=NOW, limits=LIMITS)
    assert len(bad.records) == 49 and len(bad.dead) == 1 and bad.dead[0].index_in_batch == 7


def test_ids_of_zero_values_keep_their_sign() -> None:
    """Derived ids hash the repr of time and value; 0.0 and -0.0 are one dict key but two reprs."""
    recs = [{"metric_name": "Latency", "value": v, "timestamp": int(NOW) - 60, "tenant_id": "acme",
             "dimensions": {"service": "a"}} for v in (0.0, -0.0, 0, 0.0, -0.0)]
    assert _same(orjson.dumps({"records": recs}))
    ids = [p["event_id"] for p in decode_metric_columns(orjson.dumps({"records": recs}), topic="t", now=NOW,
                                                        limits=LIMITS).records]
    assert ids[0] != ids[1] and ids[0] == ids[2] == ids[3] and ids[1] == ids[4]


def test_mixed_series_prefixes_and_dimension_limits() -> None:
    """Envelopes mixing tenants, namespaces and statistics (no shared series-key prefix), several or no
    dimensions, and limits that refuse a single dimension."""
    recs = [{"metric_name": ["Latency", "ErrorRate"][i % 2], "value": i * 0.1, "timestamp": int(NOW) - i,
             "tenant_id": ["acme", "t-1", "t-2"][i % 3], "namespace": ["AWS/X", ""][i % 2],
             "statistic": ["Average", "p99", "Sum"][i % 3],
             "dimensions": [{}, {"service": "a"}, {"b": "x", "a": "y"}, {"ServiceName": "s", "k": "v"}][i % 4]}
            for i in range(24)]
    raw = orjson.dumps({"records": recs})
    assert _same(raw)
    for lim in (Limits(max_dimensions=0), Limits(max_dimensions=1), Limits(max_identifier_length=20)):
        fast = decode_metric_columns(raw, topic="t", now=NOW, limits=lim)
        ref = decode_metrics_lean(raw, topic="t", now=NOW, limits=lim)
        assert orjson.dumps(fast.records) == orjson.dumps(ref.records)
        assert [d.reason for d in fast.dead] == [d.reason for d in ref.dead]


def test_unhashable_identifier_values_are_dead_lettered_alike() -> None:
    recs = [{"metric_name": "Latency", "value": 1.0, "timestamp": int(NOW), "tenant_id": "acme"},
            {"metric_name": ["Latency"], "value": 1.0, "timestamp": int(NOW), "tenant_id": "acme"},
            {"metric_name": "Latency", "value": 1.0, "timestamp": int(NOW), "tenant_id": {"a": 1}}]
    assert not _same(orjson.dumps({"records": recs}))


def test_one_dimension_cache_checks_each_value_and_keeps_components_apart() -> None:
    """The per-envelope cache of one-dimension series: a list or an object as the value is dead-lettered
    like the per-point path does (not a crash on an unhashable key); the same pair under another namespace
    gets its own component; an over-long value after good ones is still refused."""
    good = {"metric_name": "Latency", "value": 1.0, "timestamp": int(NOW), "tenant_id": "acme"}
    for odd in ([1], {"x": "y"}, 5, None):
        recs = [dict(good, dimensions={"service": "a"}), dict(good, dimensions={"service": odd})]
        assert not _same(orjson.dumps({"records": recs}))
    recs = [dict(good, namespace=ns, dimensions={k: "a"}, value=float(i))
            for i, (ns, k) in enumerate([("AWS/X", "service"), ("", "service"), ("AWS/X", "k"), ("", "k"), ("AWS/X", "k")])]
    assert _same(orjson.dumps({"records": recs}))
    fast = decode_metric_columns(orjson.dumps({"records": recs}), topic="t", now=NOW, limits=LIMITS)
    assert [p["component"] for p in fast.records] == ["a", "a", "AWS/X", "Latency", "AWS/X"]
    recs = [dict(good, dimensions={"service": "a"}), dict(good, dimensions={"service": "a" * 13})]
    assert not _same(orjson.dumps({"records": recs}))


@st.composite
def uniform_envelopes(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bool]:
    """The usual CloudWatch envelope (one metric, tenant, namespace, statistic, unit; one dimension key or
    none), and now and then one record that breaks the shape. Returns (records, whether one was broken)."""
    n = draw(st.integers(1, 15))
    head = {"metric_name": draw(st.sampled_from(["Latency", "Errors", "CPUUtilization"])),
            "tenant_id": draw(st.sampled_from(["acme", "t-1"]))}
    if draw(st.booleans()):
        head["unit"] = draw(st.sampled_from(["Milliseconds", "Count", "None"]))
    if draw(st.booleans()):
        head["namespace"] = draw(st.sampled_from(["AWS/X", ""]))
    if draw(st.booleans()):
        head["statistic"] = draw(st.sampled_from(["Average", "p99"]))
    key = draw(st.sampled_from([None, "service", "FunctionName", "host", "InstanceId"]))
    value = st.sampled_from([0.0, -0.0, 0, 1.5, 2.0, 1e-9, -3.25]) | st.floats(-1e6, 1e6)
    stamp = st.sampled_from([int(NOW) - 60, int(NOW) - 120, NOW - 0.0]) | st.integers(int(NOW) - 86400, int(NOW))
    recs = []
    for _ in range(n):
        rec: dict[str, Any] = {**head, "value": draw(value), "timestamp": draw(stamp)}
        if key is not None:
            rec["dimensions"] = {key: draw(st.sampled_from(["a", "b", "svc-1", "x" * 12]))}
        elif draw(st.booleans()):
            rec["dimensions"] = {}
        recs.append(rec)
    broken = draw(st.integers(0, 3)) == 0
    if broken:
        i = draw(st.integers(0, n - 1))
        field, bad = draw(st.sampled_from([
            ("dimensions", {"other": "a"}), ("dimensions", {"service": "a", "host": "b"}), ("dimensions", {}),
            ("dimensions", {"service": 5}), ("dimensions", {"service": "x" * 13}), ("dimensions", "svc"),
            ("history", True), ("history", False), ("history", None), ("event_id", "e-1"), ("event_id", ""),
            ("value", "1.5"), ("storage_resolution", 60)]))
        recs[i] = {**recs[i], field: bad}
    return recs, broken


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uniform_envelopes())
def test_uniform_envelopes_decode_alike(case: tuple[list[dict[str, Any]], bool]) -> None:
    recs, broken = case
    taken = _same(orjson.dumps({"records": recs}))
    assert taken or broken  # an envelope of the usual shape is never sent the per-record way


def test_the_uniform_shape_is_taken_column_by_column() -> None:
    recs: list[dict[str, Any]] = [{"metric_name": "Latency", "tenant_id": "acme", "unit": "Milliseconds", "value": float(i % 3),
             "timestamp": int(NOW) - 60 * (i % 2), "dimensions": {"service": f"s{i}"}} for i in range(6)]
    fvalues = [float(r["value"]) for r in recs]
    stamps = [float(r["timestamp"]) for r in recs]
    prefix = "acme||Latency|Average|"
    fast = metric_columns._uniform_points([None] * 6, [r["dimensions"] for r in recs], "Latency", "acme",
                                          "Milliseconds", "", "Average", fvalues, stamps, LIMITS, prefix)
    assert fast is not None
    ref = metric_columns._points(recs, ["Latency"] * 6, ["acme"] * 6, ["Milliseconds"] * 6, [""] * 6,
                                 ["Average"] * 6, [""] * 6, fvalues, stamps, LIMITS, prefix, True)
    assert orjson.dumps(fast) == orjson.dumps(ref)
    assert [p["component"] for p in fast] == [f"s{i}" for i in range(6)]
    # a dimension that names no component: the namespace or the metric is the component, as per record
    other = [{**r, "dimensions": {"host": "h"}} for r in recs]
    fast = metric_columns._uniform_points([None] * 6, [r["dimensions"] for r in other], "Latency", "acme",
                                          "Milliseconds", "", "Average", fvalues, stamps, LIMITS, prefix)
    assert fast is not None and {p["component"] for p in fast} == {"Latency"}


def test_records_with_as_many_but_other_keys_decode_alike() -> None:
    """Records of one envelope with the same number of fields but not the same fields (one gives a unit,
    another a statistic), or one dimension each under other names, are not taken as one shape."""
    base = {"metric_name": "Latency", "tenant_id": "acme", "value": 1.5, "timestamp": int(NOW),
            "dimensions": {"service": "a"}}
    mixed = [{**base, "unit": "Milliseconds"}, {**base, "statistic": "p99"}, {**base, "unit": "Milliseconds"}]
    assert _same(orjson.dumps({"records": mixed}))
    assert metric_columns._same_keys(mixed) is None
    names = [{**base, "dimensions": {"service": "a"}}, {**base, "dimensions": {"host": "h"}}]
    assert _same(orjson.dumps({"records": names}))
    same = metric_columns._same_keys(names)
    assert same is not None and list(same["value"]) == [1.5, 1.5]
