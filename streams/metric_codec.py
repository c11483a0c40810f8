"""The lean path for metric points: plain dicts checked by hand on the hot path of dedup and scoring.

Validating a MetricDataPoint with pydantic costs ~7 µs per point on the 2-core machines this runs on
(`benchmarks/pipeline_throughput.py` profile); a metric of the usual shape is checked here in ~1 µs.
The model stays the reference: `lean_metric` only accepts records whose every field has the plain
JSON type the model would take as it is, and returns None for anything else (a string value, a
millisecond timestamp, a naive or unusual date format, a missing field...), which the caller then
validates with the model. So the lean path never accepts what the model rejects and never gives a
different point (tests/unit/test_metric_codec.py checks both on generated records).

A lean point is the model's fields with the timestamp as epoch seconds, plus the derived `series`
and `component` — what the clean topic carries and what scoring, the metrics tap and the healing
triggers read without parsing again. Its value and unit are canonical (streams/units.py: ratios in
Percent), so every consumer reads Percent and fraction producers alike; the event id is computed
from the value as it was sent.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from streams.records import MetricDataPoint, metric_component, metric_event_id, metric_series_key
from streams.units import canonical

LeanPoint = dict[str, Any]

# pydantic reads numbers beyond ±2e10 as milliseconds; those (and fractions, which it rounds to µs)
# are left to the model.
_SECONDS_LIMIT = 2e10
# The ISO form both datetime.fromisoformat and pydantic read alike: offset-aware, 'T', at most µs.
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z")


def _seconds(ts: Any) -> float | None:
    tt = type(ts)
    if tt is int:
        return float(ts) if -_SECONDS_LIMIT <= ts <= _SECONDS_LIMIT else None
    if tt is float:
        return ts if -_SECONDS_LIMIT <= ts <= _SECONDS_LIMIT and ts.is_integer() else None
    if tt is str and _ISO.match(ts):
        try:
            return datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return None
    return None


def lean_metric(item: Any) -> LeanPoint | None:
    """The lean point of a raw metric record of the usual shape, or None (then use the model)."""
    if type(item) is not dict:
        return None
    name = item.get("metric_name")
    tenant = item.get("tenant_id")
    if type(name) is not str or not name or type(tenant) is not str or not tenant:
        return None
    raw_value: Any = item.get("value")
    if type(raw_value) is not float and type(raw_value) is not int:  # not bool, str or None
        return None
    value = float(raw_value)
    if not math.isfinite(value):  # the model rejects it with its reason
        return None
    ts = _seconds(item.get("timestamp"))
    if ts is None:
        return None
    unit = item.get("unit", "None")
    namespace = item.get("namespace", "")
    statistic = item.get("statistic", "Average")
    event_id = item.get("event_id", "")
    if type(unit) is not str or type(namespace) is not str or type(statistic) is not str or type(event_id) is not str:
        return None
    if "dimensions" in item:
        dims = item["dimensions"]
        if type(dims) is not dict:
            return None
        for v in dims.values():
            if type(v) is not str:
                return None
    else:
        dims = {}
    series = metric_series_key(tenant, namespace, name, statistic, dims)
    event_id = event_id or metric_event_id(series, ts, value)
    value, unit = canonical(name, value, unit)
    lean: LeanPoint = {"metric_name": name, "value": value, "unit": unit, "dimensions": dims, "timestamp": ts,
                       "tenant_id": tenant, "namespace": namespace, "statistic": statistic,
                       "event_id": event_id, "series": series,
                       "component": metric_component(dims, namespace, name)}
    if item.get("history") is True:  # carried only when set: live points stay as they were
        lean["history"] = True
    return lean


def lean_from_model(p: MetricDataPoint) -> LeanPoint:
    """The lean point of a validated model (the slow path gives the same dict as the fast one)."""
    value, unit = canonical(p.metric_name, p.value, p.unit)
    lean: LeanPoint = {"metric_name": p.metric_name, "value": value, "unit": unit, "dimensions": p.dimensions,
                       "timestamp": p.timestamp.timestamp(), "tenant_id": p.tenant_id, "namespace": p.namespace,
                       "statistic": p.statistic, "event_id": p.event_id, "series": p.series_key(),
                       "component": p.component()}
    if p.history:
        lean["history"] = True
    return lean


def _sound(p: dict[str, Any]) -> bool:
    """A lean point a stage can score without crashing: finite number value and time, string names
    (a hand-made record on the clean topic is not trusted blindly)."""
    v, ts = p.get("value"), p.get("timestamp")
    return (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            and isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts)
            and type(p["series"]) is str and type(p["component"]) is str and type(p.get("metric_name")) is str
            and type(p.get("tenant_id")) is str and type(p.get("dimensions")) is dict
            and type(p.get("namespace")) is str and type(p.get("statistic")) is str)


def _consistent(p: dict[str, Any]) -> bool:
    """The point's `series` and `component` are the ones its fields give, and it has an event id: a record
    someone wrote with the form of a lean point cannot put its values into another series (another
    tenant's detector, healing baselines or dedup window) by naming it."""
    dims = p["dimensions"]
    for v in dims.values():
        if type(v) is not str:
            return False
    ns, name = p["namespace"], p["metric_name"]
    eid = p.get("event_id")
    return (type(eid) is str and eid != "" and type(p.get("unit", "None")) is str
            and p["series"] == metric_series_key(p["tenant_id"], ns, name, p["statistic"], dims)
            and p["component"] == metric_component(dims, ns, name))


def trusted_lean(item: Any) -> LeanPoint | None:
    """A point of the clean topic: written by dedup as a lean point (taken as it is once its series and
    component are checked against its fields); anything else (an older writer, a hand-made record, a
    lean point naming another series) is checked like a raw record, its series and component derived
    from its fields. None if it is not a point."""
    if type(item) is dict and "series" in item and "component" in item and _sound(item) and _consistent(item):
        return item
    lean = lean_metric(item)
    if lean is not None:
        return lean
    try:
        return lean_from_model(MetricDataPoint.model_validate(item))
    except ValueError:
        return None


def to_model(p: LeanPoint) -> MetricDataPoint:
    """The model of a lean point, for the rare places that need one (building an insight)."""
    return MetricDataPoint.model_validate(p)
