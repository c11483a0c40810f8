"""Decoding telemetry messages (one record or an envelope of many) into records and dead letters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from streams.contract import Limits, clip_original, violation
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


def dead_letter(reason: str, original: str, **where: Any) -> DeadLetter:
    """A dead letter whose original is cut to fit a Kafka message (streams/contract.py)."""
    text, size, cut = clip_original(original)
    return DeadLetter(reason=reason, original=text, original_size=size if cut else -1, original_truncated=cut,
                      **where)


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
        return [], False, dead_letter("not valid JSON", _original(raw), error=str(exc), source_topic=topic,
                                      partition=partition, offset=offset)
    if isinstance(payload, dict) and ENVELOPE_KEY in payload:
        items = payload[ENVELOPE_KEY]
        if not isinstance(items, list):
            return [], True, dead_letter(f"envelope field '{ENVELOPE_KEY}' must be a list", _original(raw),
                                         source_topic=topic, partition=partition, offset=offset)
        return items, True, None
    return [payload], False, None


def _validate_one(kind: str, item: Any, index: int, batch: bool, raw: bytes, topic: str, partition: int,
                  offset: int) -> Record | DeadLetter:
    """One item through the model: the record, or its dead letter with the reason."""
    original = _original(orjson.dumps(item)) if batch else _original(raw)
    where = {"source_topic": topic, "partition": partition, "offset": offset,
             "index_in_batch": index if batch else None}
    if not isinstance(item, dict):
        return dead_letter(f"a {kind} record must be a JSON object, got {type(item).__name__}", original, **where)
    try:
        return TELEMETRY_MODELS[kind].model_validate(item)
    except ValidationError as exc:
        prefix = "non-finite value" if any(e.get("type") == "finite_number" for e in exc.errors()) else "invalid"
        return dead_letter(f"{prefix} {kind} record: {_reason(exc)}", original, error=str(exc)[:2000], **where)


def _where(item: Any, index: int, batch: bool, raw: bytes, topic: str, partition: int, offset: int
           ) -> dict[str, Any]:
    return {"original": _original(orjson.dumps(item)) if batch else _original(raw), "source_topic": topic,
            "partition": partition, "offset": offset, "index_in_batch": index if batch else None}


def _oversized(items: Sequence[Any], batch: bool, raw: bytes, limits: Limits | None) -> dict[int, int]:
    """Index → size of the records larger than the contract's limit (cheap: only a message larger than
    the limit can hold one)."""
    if limits is None or len(raw) <= limits.max_record_bytes:
        return {}
    if not batch:
        return {0: len(raw)}
    sizes = {i: len(orjson.dumps(it)) for i, it in enumerate(items)}
    return {i: n for i, n in sizes.items() if n > limits.max_record_bytes}


def _too_large(kind: str, size: int, limits: Limits) -> str:
    return f"record too large: {kind} record of {size} bytes (limit INGEST_MAX_RECORD_BYTES {limits.max_record_bytes})"


def decode_telemetry(kind: str, raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1,
                     now: float | None = None, limits: Limits | None = None) -> Decoded:
    """Decode one message of a raw telemetry topic.

    A message is either one JSON record or an envelope ``{"records": [...]}`` of records of
    one kind. Bad records of a batch are dead-lettered one by one; the good ones pass. With `limits`
    (and `now`), records breaking the ingest contract's limits are dead-lettered too (streams/contract.py).
    """
    items, batch, bad = _items(raw, topic, partition, offset)
    if bad is not None:
        return Decoded([], [bad])
    big = _oversized(items, batch, raw or b"", limits)
    good: list[Any] = []
    dead: list[DeadLetter] = []
    if not big and all(isinstance(item, dict) for item in items):
        try:  # fast path: the whole batch is valid (the usual case)
            good = list_adapter(TELEMETRY_MODELS[kind]).validate_python(items)
            return _checked(kind, good, list(range(len(good))), dead, items, batch, raw or b"", topic, partition,
                            offset, now, limits)
        except ValidationError:
            pass  # some record is bad: validate one by one so each bad one gets its own dead letter
    indexes: list[int] = []
    for i, item in enumerate(items):
        if i in big:
            dead.append(dead_letter(_too_large(kind, big[i], limits), **_where(item, i, batch, raw or b"", topic,  # type: ignore[arg-type]
                                                                               partition, offset)))
            continue
        res = _validate_one(kind, item, i, batch, raw or b"", topic, partition, offset)
        if isinstance(res, DeadLetter):
            dead.append(res)
        else:
            good.append(res)
            indexes.append(i)
    return _checked(kind, good, indexes, dead, items, batch, raw or b"", topic, partition, offset, now, limits)


def _checked(kind: str, good: list[Any], indexes: list[int], dead: list[DeadLetter], items: Sequence[Any],
             batch: bool, raw: bytes, topic: str, partition: int, offset: int, now: float | None,
             limits: Limits | None) -> Decoded:
    """The parsed records that also keep the contract's limits; the others dead-lettered."""
    if limits is None or now is None:
        return Decoded(good, dead)
    kept: list[Any] = []
    for rec, i in zip(good, indexes, strict=True):
        why = violation(kind, rec, now, limits)
        if why is None:
            kept.append(rec)
        else:
            dead.append(dead_letter(why, **_where(items[i], i, batch, raw, topic, partition, offset)))
    return Decoded(kept, dead)


def decode_metrics_lean(raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1,
                        now: float | None = None, limits: Limits | None = None) -> Decoded:
    """Decode one raw metric message into lean points (streams/metric_codec.py): records of the usual
    shape are checked by hand, the others by the model, bad ones dead-lettered one by one (with
    `limits` and `now`, those breaking the contract's limits too)."""
    items, batch, bad = _items(raw, topic, partition, offset)
    if bad is not None:
        return Decoded([], [bad])
    big = _oversized(items, batch, raw or b"", limits)
    good: list[Any] = []
    indexes: list[int] = []
    dead: list[DeadLetter] = []
    for i, item in enumerate(items):
        if big and i in big:
            dead.append(dead_letter(_too_large("metric", big[i], limits), **_where(item, i, batch, raw or b"",  # type: ignore[arg-type]
                                                                                   topic, partition, offset)))
            continue
        lean = lean_metric(item)
        if lean is None:
            res = _validate_one("metric", item, i, batch, raw or b"", topic, partition, offset)
            if isinstance(res, DeadLetter):
                dead.append(res)
                continue
            lean = lean_from_model(res)  # type: ignore[arg-type]
        good.append(lean)
        indexes.append(i)
    return _checked("metric", good, indexes, dead, items, batch, raw or b"", topic, partition, offset, now, limits)


def split_encoded(items: Sequence[Any], encode: Callable[[Sequence[Any]], bytes], limit: int
                  ) -> tuple[list[bytes], list[Any]]:
    """`items` encoded as messages of at most `limit` bytes each (halving a batch that is too large), and
    the items that do not fit a message even alone (for the caller to dead-letter: never dropped)."""
    if not items:
        return [], []
    data = encode(items)
    if len(data) <= limit:
        return [data], []
    if len(items) == 1:
        return [], [items[0]]
    mid = len(items) // 2
    a, a_big = split_encoded(items[:mid], encode, limit)
    b, b_big = split_encoded(items[mid:], encode, limit)
    return a + b, a_big + b_big


def encode_lean(points: Sequence[Any]) -> bytes:
    """One clean-topic message of lean metric points."""
    return orjson.dumps({ENVELOPE_KEY: points})


def encode_envelope(records: Sequence[Record]) -> bytes:
    """One Kafka message carrying many records of one kind (Faust's cost is per message)."""
    if not records:
        return orjson.dumps({ENVELOPE_KEY: []})
    # Same JSON as model_dump(mode="json") per record, serialised in one pydantic-core call.
    return b'{"%s":' % ENVELOPE_KEY.encode() + list_adapter(type(records[0])).dump_json(list(records)) + b"}"
