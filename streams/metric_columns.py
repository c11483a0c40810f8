"""Columnar decoding of a raw metric envelope: every check run per column (numpy where it pays), once.

The per-point path (`streams.codec.decode_metrics_lean`) checks each record field by field and then
each contract rule (~6 µs a point here). An envelope of the usual shape — every record a JSON object
whose fields have the plain types the model takes as they are, nothing breaking a limit — passes the
same checks column by column: the types of a column at once (`set(map(type, col))`), values and
timestamps as numpy arrays (finite, plausible), identifier lengths by one `max(map(len, col))`. What
is left per point is what cannot be vectorised: the dimensions, the series key, the derived event id
and the lean dict itself. Any envelope that fails a column check goes through the per-point path
whole, so a bad record still gets its own dead letter with its reason, and the result is always the
per-point path's (tests/unit/test_metric_columns.py compares both on generated envelopes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.codec import Decoded, _items, decode_metrics_lean
from streams.contract import Limits
from streams.metric_codec import LeanPoint, _seconds
from streams.records import metric_component, metric_event_id, metric_series_key
from streams.units import canonical

_MISSING: dict[str, str] = {}
_SECONDS_LIMIT = 2e10  # as streams/metric_codec.py: larger numbers are milliseconds for the model
STATS = {"columnar": 0, "per_point": 0}


def decode_metric_columns(raw: bytes | None, *, topic: str, partition: int = -1, offset: int = -1,
                          now: float, limits: Limits) -> Decoded:
    """Decode one raw metric message into lean points and dead letters, exactly as decode_metrics_lean."""
    if raw is not None and len(raw) <= limits.max_record_bytes:  # no record can be over the size limit
        items, _batch, bad = _items(raw, topic, partition, offset)
        if bad is None and items:
            points = columns_to_points(items, now, limits)
            if points is not None:
                STATS["columnar"] += 1
                return Decoded(points, [])
    STATS["per_point"] += 1
    return decode_metrics_lean(raw, topic=topic, partition=partition, offset=offset, now=now, limits=limits)


def _all_str(col: list[Any]) -> bool:
    return set(map(type, col)) == {str}


def _timestamps(col: list[Any], now: float, lim: Limits) -> list[float] | None:
    kinds = set(map(type, col))
    if kinds <= {int, float}:
        try:
            ts = np.array(col, dtype=np.float64)
        except OverflowError:
            return None
        if float in kinds and not bool(np.all(ts == np.floor(ts))):  # fractions: the model rounds them
            return None
        if not bool(np.all(np.abs(ts) <= _SECONDS_LIMIT)):
            return None
        out: list[float] = ts.tolist()
    elif kinds == {str}:  # ISO strings: parsed once per distinct time (series of a window share it)
        seen: dict[str, float | None] = {}
        out = []
        for s in col:
            t = seen.get(s)
            if t is None:
                t = seen[s] = _seconds(s)
                if t is None:
                    return None
            out.append(t)
        ts = np.array(out, dtype=np.float64)
    else:
        return None
    if not bool(np.all((ts >= now - lim.max_age_seconds) & (ts <= now + lim.max_future_seconds))):
        return None
    return out


def columns_to_points(items: Sequence[Any], now: float, lim: Limits) -> list[LeanPoint] | None:
    """The lean points of an envelope whose every record passes every check, or None (then per point)."""
    if set(map(type, items)) != {dict}:
        return None
    names = [it.get("metric_name") for it in items]
    tenants = [it.get("tenant_id") for it in items]
    units = [it.get("unit", "None") for it in items]
    spaces = [it.get("namespace", "") for it in items]
    stats = [it.get("statistic", "Average") for it in items]
    eids = [it.get("event_id", "") for it in items]
    if not all(map(_all_str, (names, tenants, units, spaces, stats, eids))) or "" in names or "" in tenants:
        return None
    most = lim.max_identifier_length
    if max(max(map(len, c)) for c in (names, tenants, spaces, stats, eids, units)) > most or most < 7:
        return None  # (7: the canonical unit "Percent" must fit too)
    values = [it.get("value") for it in items]
    if not set(map(type, values)) <= {int, float}:
        return None
    try:
        varr = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    if not bool(np.all(np.isfinite(varr))):
        return None
    ts = _timestamps([it.get("timestamp") for it in items], now, lim)
    if ts is None:
        return None
    fvalues: list[float] = varr.tolist()
    max_dims, max_val = lim.max_dimensions, lim.max_dimension_value_length
    convert: dict[tuple[str, str], bool] = {}
    out: list[LeanPoint] = []
    for it, name, tenant, unit, ns, stat, eid, v, t in zip(items, names, tenants, units, spaces, stats, eids,
                                                           fvalues, ts, strict=True):
        dims = it.get("dimensions", _MISSING)
        if dims is _MISSING:
            dims = {}
        elif type(dims) is not dict or len(dims) > max_dims:
            return None
        for k, dv in dims.items():
            if type(dv) is not str or len(k) > most or len(dv) > max_val:
                return None
        series = metric_series_key(tenant, ns, name, stat, dims)
        if not eid:
            eid = metric_event_id(series, t, v)
            if len(eid) > most:
                return None
        pair = (name, unit)
        conv = convert.get(pair)
        if conv is None:
            conv = convert[pair] = canonical(name, 0.5, unit) != (0.5, unit)
        if conv:
            v, unit = canonical(name, v, unit)
        lean: LeanPoint = {"metric_name": name, "value": v, "unit": unit, "dimensions": dims, "timestamp": t,
                           "tenant_id": tenant, "namespace": ns, "statistic": stat, "event_id": eid,
                           "series": series, "component": metric_component(dims, ns, name)}
        if it.get("history") is True:
            lean["history"] = True
        out.append(lean)
    return out
