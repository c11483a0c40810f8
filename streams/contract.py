"""The telemetry ingest contract's limits: plausible timestamps, identifier lengths, record sizes (README).

Checked by the dedup agents after a record has been parsed (lean point or model), so a record that
breaks a limit is dead-lettered with the rule it broke, never passed on and never crashing a stage
further down. The limits come from settings (INGEST_*); time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Dead letters carry the original record; one that is larger is cut to this many characters (with its
# size and a flag), so a dead letter always fits a Kafka message whatever was sent.
DEADLETTER_ORIGINAL_CHARS = 65_536


@dataclass(frozen=True)
class Limits:
    """What the ingest contract accepts; see the README's "Telemetry ingest contract"."""

    max_record_bytes: int = 262_144
    max_identifier_length: int = 512
    max_dimension_value_length: int = 1024
    max_dimensions: int = 30
    max_age_seconds: float = 1826 * 86400.0
    max_future_seconds: float = 7200.0

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        return cls(max_record_bytes=s.ingest_max_record_bytes, max_identifier_length=s.ingest_max_identifier_length,
                   max_dimension_value_length=s.ingest_max_dimension_value_length,
                   max_dimensions=s.ingest_max_dimensions, max_age_seconds=s.ingest_max_age_days * 86400.0,
                   max_future_seconds=s.ingest_max_future_minutes * 60.0)


def timestamp_violation(ts: float, now: float, lim: Limits) -> str | None:
    if not math.isfinite(ts):
        return "implausible timestamp: not a finite time"
    if ts < now - lim.max_age_seconds:
        return (f"implausible timestamp: {now - ts:.0f} s old, more than INGEST_MAX_AGE_DAYS "
                f"({lim.max_age_seconds / 86400:g} days)")
    if ts > now + lim.max_future_seconds:
        return (f"implausible timestamp: {ts - now:.0f} s in the future, more than INGEST_MAX_FUTURE_MINUTES "
                f"({lim.max_future_seconds / 60:g} min)")
    return None


def _ids(fields: Mapping[str, Any], names: tuple[str, ...], lim: Limits) -> str | None:
    for name in names:
        v = fields.get(name)
        if isinstance(v, str) and len(v) > lim.max_identifier_length:
            return f"identifier too long: {name} has {len(v)} characters (limit {lim.max_identifier_length})"
    return None


def _dimensions(dims: Mapping[str, str], lim: Limits) -> str | None:
    if len(dims) > lim.max_dimensions:
        return f"too many dimensions: {len(dims)} (limit {lim.max_dimensions})"
    for k, v in dims.items():
        if len(k) > lim.max_identifier_length:
            return f"identifier too long: a dimension name has {len(k)} characters (limit {lim.max_identifier_length})"
        if len(v) > lim.max_dimension_value_length:
            return (f"identifier too long: dimension {k[:40]!r} has a value of {len(v)} characters "
                    f"(limit {lim.max_dimension_value_length})")
    return None


_METRIC_IDS = ("tenant_id", "metric_name", "namespace", "statistic", "unit", "event_id")


def metric_violation(p: Mapping[str, Any], now: float, lim: Limits) -> str | None:
    """The rule a lean metric point (streams/metric_codec.py) breaks, or None."""
    value = p["value"]
    if not math.isfinite(value):
        return "non-finite value: value must be a finite number"
    return (timestamp_violation(float(p["timestamp"]), now, lim) or _ids(p, _METRIC_IDS, lim)
            or _dimensions(p["dimensions"], lim))


def log_violation(rec: Any, now: float, lim: Limits) -> str | None:
    """The rule a LogEvent breaks, or None."""
    fields = {"tenant_id": rec.tenant_id, "log_group": rec.log_group, "log_stream": rec.log_stream,
              "severity": rec.severity, "event_id": rec.event_id}
    return timestamp_violation(rec.timestamp.timestamp(), now, lim) or _ids(fields, tuple(fields), lim)


def event_violation(rec: Any, now: float, lim: Limits) -> str | None:
    """The rule a CloudWatchEvent breaks, or None."""
    fields = {"tenant_id": rec.tenant_id, "source": rec.source, "event_id": rec.event_id}
    return timestamp_violation(rec.timestamp.timestamp(), now, lim) or _ids(fields, tuple(fields), lim)


def violation(kind: str, rec: Any, now: float, lim: Limits) -> str | None:
    if kind == "metric":
        if not isinstance(rec, dict):  # a MetricDataPoint (the model path)
            rec = {**rec.model_dump(), "timestamp": rec.timestamp.timestamp()}
        return metric_violation(rec, now, lim)
    if kind == "log":
        return log_violation(rec, now, lim)
    return event_violation(rec, now, lim)


def clip_original(text: str) -> tuple[str, int, bool]:
    """The original as a dead letter keeps it: (text, its full length, whether it was cut)."""
    if len(text) <= DEADLETTER_ORIGINAL_CHARS:
        return text, len(text), False
    return text[:DEADLETTER_ORIGINAL_CHARS], len(text), True
