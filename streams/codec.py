"""Decoding telemetry messages (one record or an envelope of many) into records and dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

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


def decode_telemetry(kind: str, raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1) -> Decoded:
    """Decode one message of a raw telemetry topic.

    A message is either one JSON record or an envelope ``{"records": [...]}`` of records of
    one kind. Bad records of a batch are dead-lettered one by one; the good ones pass.
    """
    model = TELEMETRY_MODELS[kind]
    if raw is None:
        return Decoded([], [DeadLetter(reason="empty message (no value)", source_topic=topic,
                                       partition=partition, offset=offset, original="")])
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Decoded([], [DeadLetter(reason="not valid JSON", error=str(exc), source_topic=topic,
                                       partition=partition, offset=offset, original=_original(raw))])
    items: Sequence[Any]
    batch = isinstance(payload, dict) and ENVELOPE_KEY in payload
    if batch:
        items = payload[ENVELOPE_KEY]
        if not isinstance(items, list):
            return Decoded([], [DeadLetter(reason=f"envelope field '{ENVELOPE_KEY}' must be a list",
                                           source_topic=topic, partition=partition, offset=offset,
                                           original=_original(raw))])
    else:
        items = [payload]
    if all(isinstance(item, dict) for item in items):
        try:  # fast path: the whole batch is valid (the usual case)
            return Decoded(list_adapter(model).validate_python(items), [])
        except ValidationError:
            pass  # some record is bad: validate one by one so each bad one gets its own dead letter
    good: list[Record] = []
    dead: list[DeadLetter] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            dead.append(DeadLetter(reason=f"a {kind} record must be a JSON object, got {type(item).__name__}",
                                   source_topic=topic, partition=partition, offset=offset,
                                   index_in_batch=i if batch else None,
                                   original=_original(orjson.dumps(item)) if batch else _original(raw)))
            continue
        try:
            good.append(model.model_validate(item))
        except ValidationError as exc:
            dead.append(DeadLetter(reason=f"invalid {kind} record: {_reason(exc)}", error=str(exc)[:2000],
                                   source_topic=topic, partition=partition, offset=offset,
                                   index_in_batch=i if batch else None,
                                   original=_original(orjson.dumps(item)) if batch else _original(raw)))
    return Decoded(good, dead)


def encode_envelope(records: Sequence[Record]) -> bytes:
    """One Kafka message carrying many records of one kind (Faust's cost is per message)."""
    if not records:
        return orjson.dumps({ENVELOPE_KEY: []})
    # Same JSON as model_dump(mode="json") per record, serialised in one pydantic-core call.
    return b'{"%s":' % ENVELOPE_KEY.encode() + list_adapter(type(records[0])).dump_json(list(records)) + b"}"
