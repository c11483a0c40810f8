"""Every rule of the README's ingest contract, through the decoders the dedup agents call (no broker)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.codec import decode_metrics_lean, decode_telemetry, encode_lean, split_encoded
from streams.contract import DEADLETTER_ORIGINAL_CHARS, Limits
from streams.metric_codec import trusted_lean

NOW = 1_796_000_000.0  # 2026-11-30
LIM = Limits()
TOPIC = "telemetry.metrics.raw"


def _metric(**over: Any) -> dict[str, Any]:
    return {"metric_name": "Latency", "value": 12.5, "timestamp": NOW - 60, "tenant_id": "acme",
            "dimensions": {"service": "api"}, **over}


def _one(kind: str, rec: Any) -> tuple[list[Any], list[Any]]:
    raw = orjson.dumps({"records": [rec]})
    if kind == "metric":
        d = decode_metrics_lean(raw, topic=TOPIC, now=NOW, limits=LIM)
        d2 = decode_telemetry(kind, raw, topic=TOPIC, now=NOW, limits=LIM)  # the model path agrees
        assert len(d2.records) == len(d.records) and len(d2.dead) == len(d.dead)
    else:
        d = decode_telemetry(kind, raw, topic=TOPIC, now=NOW, limits=LIM)
    return d.records, d.dead


BAD_METRICS: list[tuple[str, dict[str, Any], str]] = [
    ("NaN string", _metric(value="NaN"), "non-finite value"),
    ("nan string", _metric(value="nan"), "non-finite value"),
    ("Infinity string", _metric(value="Infinity"), "non-finite value"),
    ("-inf string", _metric(value="-inf"), "non-finite value"),
    ("1e400 string", _metric(value="1e400"), "non-finite value"),
    ("value not a number", _metric(value="high"), "invalid metric record"),
    ("missing metric_name", {k: v for k, v in _metric().items() if k != "metric_name"}, "invalid metric record"),
    ("too old", _metric(timestamp=NOW - 1827 * 86400), "implausible timestamp"),
    ("epoch 0", _metric(timestamp=0), "implausible timestamp"),
    ("far future", _metric(timestamp=NOW + 3 * 3600), "implausible timestamp"),
    ("year 9999", _metric(timestamp="9999-12-31T00:00:00Z"), "implausible timestamp"),
    ("long tenant", _metric(tenant_id="t" * 513), "identifier too long"),
    ("long metric name", _metric(metric_name="m" * 513), "identifier too long"),
    ("long namespace", _metric(namespace="n" * 513), "identifier too long"),
    ("long event id", _metric(event_id="e" * 513), "identifier too long"),
    ("long dimension name", _metric(dimensions={"k" * 513: "v"}), "identifier too long"),
    ("1 MB dimension value", _metric(dimensions={"service": "x" * 1_048_576}), "record too large"),
    ("long dimension value", _metric(dimensions={"service": "x" * 1025}), "identifier too long"),
    ("31 dimensions", _metric(dimensions={f"d{i}": "v" for i in range(31)}), "too many dimensions"),
]


@pytest.mark.parametrize(("name", "rec", "reason"), BAD_METRICS, ids=[b[0] for b in BAD_METRICS])
def test_bad_metric_is_dead_lettered_with_its_reason(name: str, rec: dict[str, Any], reason: str) -> None:
    good, dead = _one("metric", rec)
    assert good == [] and len(dead) == 1, name
    assert dead[0].reason.startswith(reason), dead[0].reason
    assert len(dead[0].to_bytes()) < 600_000  # a dead letter always fits a Kafka message


def test_limits_are_inclusive_and_good_records_pass() -> None:
    edge = _metric(tenant_id="t" * 512, dimensions={f"d{i}": "v" * 1024 for i in range(30)},
                   timestamp=NOW + 7199)
    good, dead = _one("metric", edge)
    assert dead == [] and len(good) == 1


def test_non_finite_literals_make_the_message_invalid_json() -> None:
    for raw in (b'{"records":[{"value":NaN}]}', b'{"metric_name":"x","value":1e400,"timestamp":1,"tenant_id":"t"}',
                b'{"value": Infinity}'):
        d = decode_metrics_lean(raw, topic=TOPIC, now=NOW, limits=LIM)
        assert d.records == [] and [x.reason for x in d.dead] == ["not valid JSON"]


def test_bad_logs_and_events() -> None:
    log = {"log_group": "/aws/lambda/x", "message": "ERROR boom", "timestamp": NOW, "tenant_id": "acme"}
    ev = {"event_type": "alarm", "source": "aws.cloudwatch", "timestamp": NOW, "tenant_id": "acme"}
    assert _one("log", log)[1] == [] and _one("event", ev)[1] == []
    cases = [("log", {**log, "log_group": "g" * 513}, "identifier too long"),
             ("log", {**log, "timestamp": NOW - 2000 * 86400}, "implausible timestamp"),
             ("log", {**log, "message": "m" * 300_000}, "record too large"),
             ("event", {**ev, "source": "s" * 600}, "identifier too long"),
             ("event", {**ev, "timestamp": NOW + 86400}, "implausible timestamp"),
             ("event", {**ev, "detail": {"blob": "x" * 300_000}}, "record too large")]
    for kind, rec, reason in cases:
        good, dead = _one(kind, rec)
        assert good == [] and dead[0].reason.startswith(reason), (kind, dead[0].reason if dead else None)


def test_single_record_message_too_large_and_original_cut() -> None:
    raw = orjson.dumps(_metric(dimensions={"service": "x" * 1_048_576}))
    d = decode_metrics_lean(raw, topic=TOPIC, now=NOW, limits=LIM)
    [dl] = d.dead
    assert dl.reason.startswith("record too large") and dl.original_truncated
    assert len(dl.original) == DEADLETTER_ORIGINAL_CHARS and dl.original_size == len(raw)


def test_envelope_keeps_good_records_beside_bad_ones() -> None:
    recs = [_metric(value=float(i)) for i in range(10)] + [_metric(value="NaN"), _metric(timestamp=1)]
    d = decode_metrics_lean(orjson.dumps({"records": recs}), topic=TOPIC, now=NOW, limits=LIM)
    assert len(d.records) == 10 and sorted(x.index_in_batch for x in d.dead) == [10, 11]


def test_split_encoded_keeps_every_message_below_the_limit() -> None:
    pts = [{"series": f"s{i}", "v": "x" * 100} for i in range(1000)]
    msgs, big = split_encoded(pts, encode_lean, 10_000)
    assert big == [] and all(len(m) <= 10_000 for m in msgs)
    assert sum(len(orjson.loads(m)["records"]) for m in msgs) == 1000
    msgs, big = split_encoded([{"v": "x" * 20_000}, {"v": "y"}], encode_lean, 10_000)
    assert len(big) == 1 and len(msgs) == 1


def test_clean_topic_point_that_is_not_sound_is_not_trusted() -> None:
    p = decode_metrics_lean(orjson.dumps(_metric()), topic=TOPIC).records[0]
    assert trusted_lean(p) is p
    assert trusted_lean({**p, "value": None}) is None
    assert trusted_lean({**p, "timestamp": "soon"}) is None


def test_a_lean_point_naming_another_series_is_read_from_its_fields() -> None:
    """The clean topic's lean points are taken as they are only when their series and component are the ones
    their fields give: a record naming another tenant's series (or a wrong component) gets its own."""
    p = decode_metrics_lean(orjson.dumps(_metric()), topic=TOPIC).records[0]
    other = p["series"].replace(p["tenant_id"], "victim", 1)
    for forged in ({**p, "series": other}, {**p, "component": "elsewhere"}, {**p, "event_id": ""},
                   {**p, "dimensions": {**p["dimensions"], "x": 1}}):
        got = trusted_lean(forged)
        assert got is not forged
        if got is not None:
            assert got["series"] == p["series"] and got["component"] == p["component"]
    assert trusted_lean({**p, "series": other})["series"] == p["series"]  # type: ignore[index]
