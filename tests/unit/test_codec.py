"""Unit tests of telemetry decoding (streams/codec.py): records, envelopes and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.codec import decode_telemetry, encode_envelope
from streams.records import CloudWatchEvent, LogEvent, MetricDataPoint

TOPIC = "telemetry.metrics.raw"


def _metric(i: int = 0, **extra: object) -> dict[str, object]:
    return {"metric_name": "Latency", "value": 10.0 + i, "timestamp": 1_700_000_000 + i, "tenant_id": "acme",
            "dimensions": {"service": "api"}, **extra}


def test_single_record() -> None:
    d = decode_telemetry("metric", orjson.dumps(_metric()), topic=TOPIC, partition=2, offset=7)
    assert d.dead == []
    assert len(d.records) == 1
    rec = d.records[0]
    assert isinstance(rec, MetricDataPoint) and rec.value == 10.0 and rec.event_id.startswith("m-")
    assert rec.timestamp == datetime.fromtimestamp(1_700_000_000, UTC)


def test_envelope_of_many_records_of_each_kind() -> None:
    d = decode_telemetry("metric", orjson.dumps({"records": [_metric(i) for i in range(5)]}), topic=TOPIC)
    assert [r.value for r in d.records] == [10.0, 11.0, 12.0, 13.0, 14.0] and d.dead == []
    log = {"log_group": "/aws/lambda/x", "message": "ERROR boom", "timestamp": 1, "tenant_id": "acme"}
    ev = {"event_type": "alarm", "source": "aws.cloudwatch", "timestamp": 1, "tenant_id": "acme"}
    assert isinstance(decode_telemetry("log", orjson.dumps({"records": [log]}), topic="l").records[0], LogEvent)
    assert isinstance(decode_telemetry("event", orjson.dumps(ev), topic="e").records[0], CloudWatchEvent)


def test_empty_envelope_is_no_records_and_no_dead_letters() -> None:
    d = decode_telemetry("metric", b'{"records": []}', topic=TOPIC)
    assert d.records == [] and d.dead == []


def test_bad_json_is_one_dead_letter_with_the_original_bytes() -> None:
    raw = b'{"metric_name": "Latency", "value": '
    d = decode_telemetry("metric", raw, topic=TOPIC, partition=1, offset=42)
    assert d.records == []
    [dl] = d.dead
    assert dl.reason == "not valid JSON" and dl.error
    assert (dl.source_topic, dl.partition, dl.offset, dl.index_in_batch) == (TOPIC, 1, 42, None)
    assert dl.original == raw.decode()


def test_invalid_utf8_is_kept_with_backslash_escapes() -> None:
    raw = b"\xff\xfe not json"
    [dl] = decode_telemetry("metric", raw, topic=TOPIC).dead
    assert dl.original == "\\xff\\xfe not json"
    assert dl.original.encode().decode("unicode_escape").encode("latin-1") == raw


def test_missing_value_is_dead_lettered() -> None:
    [dl] = decode_telemetry("metric", None, topic=TOPIC, offset=3).dead
    assert "empty" in dl.reason and dl.original == "" and dl.offset == 3


def test_wrong_types_name_the_field() -> None:
    d = decode_telemetry("metric", orjson.dumps(_metric(value="fast")), topic=TOPIC)
    assert d.records == []
    [dl] = d.dead
    assert "value" in dl.reason and dl.reason.startswith("invalid metric record")
    d = decode_telemetry("metric", orjson.dumps({"value": 1.0, "timestamp": 1, "tenant_id": "a"}), topic=TOPIC)
    assert "metric_name" in d.dead[0].reason


def test_envelope_records_must_be_a_list() -> None:
    raw = orjson.dumps({"records": {"metric_name": "x"}})
    d = decode_telemetry("metric", raw, topic=TOPIC)
    assert d.records == [] and len(d.dead) == 1
    assert "must be a list" in d.dead[0].reason and d.dead[0].original == raw.decode()


def test_only_the_bad_records_of_a_batch_are_dead_lettered() -> None:
    items: list[object] = [_metric(0), _metric(1, value="x"), _metric(2), 17, _metric(4, tenant_id=""), _metric(5)]
    d = decode_telemetry("metric", orjson.dumps({"records": items}), topic=TOPIC, partition=0, offset=9)
    assert [r.value for r in d.records] == [10.0, 12.0, 15.0]
    assert [dl.index_in_batch for dl in d.dead] == [1, 3, 4]
    assert "JSON object, got int" in d.dead[1].reason
    assert "tenant_id" in d.dead[2].reason
    # Each dead letter keeps its own record's bytes, not the whole envelope.
    assert orjson.loads(d.dead[0].original) == items[1]
    assert d.dead[1].original == "17"
    assert all(dl.offset == 9 and dl.source_topic == TOPIC for dl in d.dead)


def test_a_non_object_single_message_is_dead_lettered_with_its_bytes() -> None:
    d = decode_telemetry("metric", b"[1, 2]", topic=TOPIC)
    assert d.records == [] and len(d.dead) == 1
    assert d.dead[0].index_in_batch is None and d.dead[0].original == "[1, 2]"


def test_encode_envelope_round_trips() -> None:
    recs = [MetricDataPoint.model_validate(_metric(i)) for i in range(3)]
    raw = encode_envelope(recs)
    assert orjson.loads(raw) == {"records": [r.model_dump(mode="json") for r in recs]}
    back = decode_telemetry("metric", raw, topic=TOPIC)
    assert back.records == recs and back.dead == []
    assert orjson.loads(encode_envelope([])) == {"records": []}
