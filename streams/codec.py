"""Decoding telemetry messages (one record or an envelope of many) into records and dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from streams.metric_codec import lean_from_model, lean_metric
from streams.records import TELEMETRY_MODELS, DeadLetter, Record

ENVELOPE_KEY = "records"


@dataclass
class Decoded:
    """The good records of one Kafka message and a dead letter for each bad one."""

    records: list[Any]
    dead: list[DeadLetter]


@cache
def list_adapter(model: type[Record]) -> TypeAdapter[list[Any]]:
    """Validates / serialises a whole list of records in one pydantic-core call (about twice as fast
    per record as one model_validate / model_dump each)."""
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def _original(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<record>"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _items(raw: bytes | None, topic: str, partition: int, offset: int
           ) -> tuple[Sequence[Any], bool, DeadLetter | None]:
    """The items of one message (a record or an envelope's list), whether it was an envelope, or the
    dead letter of a message that has no items to give."""
    if raw is None:
        return [], False, DeadLetter(reason="empty message (no value)", source_topic=topic, partition=partition,
                                     offset=offset, original="")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], False, DeadLetter(reason="not valid JSON", error=str(exc), source_topic=topic,
                                     partition=partition, offset=offset, original=_original(raw))
    if isinstance(payload, dict) and ENVELOPE_KEY in payload:
        items = payload[ENVELOPE_KEY]
        if not isinstance(items, list):
            return [], True, DeadLetter(reason=f"envelope field '{ENVELOPE_KEY}' must be a list", source_topic=topic,
                                        partition=partition, offset=offset, original=_original(raw))
        return items, True, None
    return [payload], False, None


def _validate_one(kind: str, item: Any, index: int, batch: bool, raw: bytes, topic: str, partition: int,
                  offset: int) -> Record | DeadLetter:
    """One item through the model: the record, or its dead letter with the reason."""
    original = _original(orjson.dumps(item)) if batch else _original(raw)
    where = {"source_topic": topic, "partition": partition, "offset": offset,
             "index_in_batch": index if batch else None, "original": original}
    if not isinstance(item, dict):
        return DeadLetter(reason=f"a {kind} record must be a JSON object, got {type(item).__name__}", **where)
    try:
        return TELEMETRY_MODELS[kind].model_validate(item)
    except ValidationError as exc:
        return DeadLetter(reason=f"invalid {kind} record: {_reason(exc)}", error=str(exc)[:2000], **where)


def decode_telemetry(kind: str, raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1) -> Decoded:
    """Decode one message of a raw telemetry topic.

    A message is either one JSON record or an envelope ``{"records": [...]}`` of records of
    one kind. Bad records of a batch are dead-lettered one by one; the good ones pass.
    """
    items, batch, bad = _items(raw, topic, partition, offset)
    if bad is not None:
        return Decoded([], [bad])
    if all(isinstance(item, dict) for item in items):
        try:  # fast path: the whole batch is valid (the usual case)
            return Decoded(list_adapter(TELEMETRY_MODELS[kind]).validate_python(items), [])
        except ValidationError:
            pass  # some record is bad: validate one by one so each bad one gets its own dead letter
    good: list[Record] = []
    dead: list[DeadLetter] = []
    for i, item in enumerate(items):
        res = _validate_one(kind, item, i, batch, raw or b"", topic, partition, offset)
        if isinstance(res, DeadLetter):
            dead.append(res)
        else:
            good.append(res)
    return Decoded(good, dead)


def decode_metrics_lean(raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1) -> Decoded:
    """Decode one raw metric message into lean points (streams/metric_codec.py): records of the usual
    shape are checked by hand, the others by the model, bad ones dead-lettered one by one."""
    items, batch, bad = _items(raw, topic, partition, offset)
    if bad is not None:
        return Decoded([], [bad])
    good: list[Any] = []
    dead: list[DeadLetter] = []
    for i, item in enumerate(items):
        lean = lean_metric(item)
        if lean is not None:
            good.append(lean)
            continue
        res = _validate_one("metric", item, i, batch, raw or b"", topic, partition, offset)
        if isinstance(res, DeadLetter):
            dead.append(res)
        else:
            good.append(lean_from_model(res))  # type: ignore[arg-type]
    return Decoded(good, dead)


def encode_lean(points: Sequence[Any]) -> bytes:
    """One clean-topic message of lean metric points."""
    return orjson.dumps({ENVELOPE_KEY: points})


def encode_envelope(records: Sequence[Record]) -> bytes:
    """One Kafka message carrying many records of one kind (Faust's cost is per message)."""
    if not records:
        return orjson.dumps({ENVELOPE_KEY: []})
    # Same JSON as model_dump(mode="json") per record, serialised in one pydantic-core call.
    return b'{"%s":' % ENVELOPE_KEY.encode() + list_adapter(type(records[0])).dump_json(list(records)) + b"}"
