"""The columnar trend trackers (agents/scoring/logic/trend_columns.py) and the columnar series bookkeeping
(series.py score_groups) give exactly what TrendTracker.observe and SeriesModel.observe give, point by
point: findings at the same indices, the same scores, the same checkpoint bytes, the same bookkeeping."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.scoring.logic import trends as _tr
from agents.scoring.logic.detectors import DetectorParams, KaizenDetector
from agents.scoring.logic.series import SeriesModel, score_groups, series_columns_of
from agents.scoring.logic.trend_columns import KINDS, UNITS, TrendColumns, TrendSlot
from agents.scoring.logic.trend_kernel import _rule_holds, fsum_array
from agents.scoring.logic.trends import TrendFinding, TrendParams, TrendTracker, any_rule_holds
from agents.scoring.logic.vectorised import DetectorColumns

# Small windows reach every branch within a few dozen points: the baseline filling, rules holding,
# incidents persisting and reported, re-arming after `clear`, the drift rule on a full ring, and the exact
# re-summation every 16 points.
SMALL = TrendParams(baseline_size=12, current_size=4, min_baseline=6, persist=3, clear=8, unusual=0.5)
TIGHT = TrendParams(baseline_size=7, current_size=3, min_baseline=1, persist=1, clear=2, unusual=0.0,
                    std_k=0.5, latency_increase=0.05, error_increase=0.5, utilization_max=10.0, throughput_drop=0.05)
TREND_PARAMS = [SMALL, TIGHT, TrendParams()]
# a detector that alarms within a few points (the incident suppression after an alarm is then exercised)
DETECTOR = DetectorParams(warmup=3, grid_at=12, bins=4, table_bits=4, short_win=3, val_short=2, quiet=2,
                          season_bins=4, season_min=1, rest=4)

NAMES = ["Latency", "Duration", "5XXError", "ErrorRate", "ErrorRatio", "CPUUtilization", "Invocations",
         "RequestCount", "FreeableMemory"]
_HOSTILE = [math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e300, -1e300, 1.7e308,
            -1.7e308, 9.9e99, 1e154, -1e154]


def _unit_tracker(name: str, params: TrendParams) -> TrendTracker:
    t = TrendTracker.for_metric(name, params)
    if "Ratio" in name:   # the ratio unit is not derived from a name; set it to cover its rule
        t.error_unit = "ratio"
    return t


def _key(found: list[TrendFinding]) -> list[tuple[str, str, bytes]]:
    """A finding as comparable bits (NaN equal to itself, -0.0 apart from 0.0)."""
    return [(f.rule, f.severity, struct.pack("<ddd", f.baseline, f.current, f.change_pct)) for f in found]


def _same_bits(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


def _values(draw: st.DrawFn, n: int) -> list[float]:
    """One series: noise, a step, a drift, spikes, flat, hostile or tiny values (and gaps)."""
    shape = draw(st.sampled_from(["noise", "step", "drift", "spikes", "flat", "hostile", "tiny", "negative"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    base = draw(st.sampled_from([0.0, 1.0, 3.0, 50.0, 100.0, 1e6, 1e-6, -40.0]))
    at = rng.randrange(max(n, 1))
    out = []
    for i in range(n):
        noise = rng.gauss(0.0, 1.0 + abs(base) * 0.02)
        if shape == "noise":
            v = base + noise
        elif shape == "step":
            v = base + noise + (rng.choice([0.6, 2.0, -0.5]) * (abs(base) + 10.0) if i >= at else 0.0)
        elif shape == "drift":
            v = (base + 10.0) * (1.0 + 0.02 * max(0, i - at)) + noise * 0.1
        elif shape == "spikes":
            v = base + noise + (rng.random() < 0.1) * rng.choice([30.0, -30.0, 1e4])
        elif shape == "flat":
            v = base if rng.random() < 0.9 else base + rng.choice([1e-9, 1.0, 100.0])
        elif shape == "hostile":
            v = rng.choice(_HOSTILE) if rng.random() < 0.3 else base + noise
        elif shape == "tiny":
            v = rng.choice([1e-300, 2e-300, 0.0, 3e-310, 1e-305])
        else:
            v = -abs(base) - 5.0 + noise
        if rng.random() < 0.03:
            v = rng.choice([math.nan, math.inf, -math.inf])
        out.append(v)
    return out


def _cuts(draw: st.DrawFn, pts: list[Any]) -> list[list[Any]]:
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(pts), 1)), max_size=14))))
    batches, prev = [], 0
    for c in [*cuts, len(pts)]:
        if c > prev:
            batches.append(pts[prev:c])
            prev = c
    return batches


class _Raised(Exception):
    pass


def _both_raise(ref: Callable[[], Any], live: Callable[[], Any]) -> tuple[Any, Any]:
    """Both results, or _Raised when both raise (what raises — an overflowing fsum, the drift fit's power,
    an overflowing level bin — raises in both; the states after it are not compared)."""
    try:
        want = ref()
    except (ArithmeticError, ValueError):
        with pytest.raises((ArithmeticError, ValueError)):
            live()
        raise _Raised() from None
    return want, live()


# --- the trackers --------------------------------------------------------------------------------------
@st.composite
def tracker_cases(draw: st.DrawFn) -> tuple[TrendParams, list[str], list[list[tuple[int, float, float]]], list[int]]:
    params = draw(st.sampled_from(TREND_PARAMS))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=8))
    pts: list[tuple[int, float, float]] = []
    for s, _ in enumerate(names):
        vals = _values(draw, draw(st.integers(0, 110)))
        rng = random.Random(s)
        pts += [(s, v, rng.choice([0.0, 1.0, rng.random()])) for v in vals]
    # interleave the series as messages do, a series' points keeping their order
    rng = random.Random(draw(st.integers(0, 1000)))
    per: dict[int, list[tuple[int, float, float]]] = {}
    for p in pts:
        per.setdefault(p[0], []).append(p)
    slots = [s for s, items in per.items() for _ in items]
    rng.shuffle(slots)
    cursor = dict.fromkeys(per, 0)
    mixed = []
    for s in slots:
        mixed.append(per[s][cursor[s]])
        cursor[s] += 1
    swaps = draw(st.lists(st.integers(0, len(names) - 1), max_size=4))
    return params, names, _cuts(draw, mixed), swaps


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tracker_cases())
def test_columns_observe_exactly_as_the_tracker(case: tuple) -> None:
    params, names, batches, swaps = case
    cols = TrendColumns(params, capacity=1)          # grows while slots are taken
    ref = [_unit_tracker(n, params) for n in names]
    slots = [TrendSlot.adopt(cols, _unit_tracker(n, params)).slot for n in names]
    try:
        for b, pts in enumerate(batches):
            def want(pts: list[tuple[int, float, float]] = pts) -> dict[int, list[TrendFinding]]:
                out = {}
                for i, (s, v, su) in enumerate(pts):
                    f = ref[s].observe(0.0, v, su)
                    if f:
                        out[i] = f
                return out

            def got(pts: list[tuple[int, float, float]] = pts) -> dict[int, list[TrendFinding]]:
                return cols.observe_batch([slots[s] for s, _, _ in pts], [v for _, v, _ in pts],
                                          [su for _, _, su in pts])

            w, g = _both_raise(want, got)
            assert {i: _key(f) for i, f in g.items()} == {i: _key(f) for i, f in w.items()}, b
            for s, t in enumerate(ref):
                assert cols.state(slots[s]) == t.to_state(), (b, s)
            if b < len(swaps):   # a checkpoint crossing over: each form restored from the other's bytes
                s = swaps[b]
                mine, theirs = cols.state(slots[s]), ref[s].to_state()
                cols.load(slots[s], theirs)
                ref[s] = TrendTracker.from_state(mine, ref[s].kind, params, ref[s].error_unit)
    except _Raised:
        return
    for s, t in enumerate(ref):
        assert cols.windows(slots[s]) == t.windows() or _nan_windows(cols.windows(slots[s]), t.windows())
        assert cols.tracker(slots[s]).to_state() == t.to_state()


def _nan_windows(a: tuple[list[float], list[float]], b: tuple[list[float], list[float]]) -> bool:
    return all(len(x) == len(y) and all(_same_bits(u, v) for u, v in zip(x, y, strict=True))
               for x, y in zip(a, b, strict=True))


def test_long_default_series_with_incidents_drifts_and_resums() -> None:
    """Default parameters over 900 points per series: incidents of every kind, a latency leak (the drift
    rule), re-summations every 70 points, rounds of every width."""
    rng = random.Random(4)
    names = NAMES * 3
    series = []
    for k, name in enumerate(names):
        base = rng.uniform(5.0, 90.0) if "Util" in name else rng.uniform(1.0, 500.0)
        vals = []
        for i in range(900):
            v = base * (1.0 + rng.gauss(0.0, 0.03))
            leak = k >= len(NAMES) and name in ("Latency", "Duration")
            if 300 <= i < 420 + 10 * k and not leak:
                v *= 1.9 if "Invocations" not in name and "Request" not in name else 0.4
            if leak and i >= 600:
                v *= 1.0 + 0.003 * (i - 600)      # a slow leak: the drift rule
            vals.append(v)
        series.append(vals)
    cols = TrendColumns()
    ref = [_unit_tracker(n, TrendParams()) for n in names]
    slots = [TrendSlot.adopt(cols, _unit_tracker(n, TrendParams())).slot for n in names]
    cursor = [0] * len(names)
    total = 0
    rules: set[str] = set()
    while any(c < 900 for c in cursor):
        pts = []
        for s in range(len(names)):
            take = rng.choice([0, 1, 1, 2, 4, 9])
            pts += [(s, v) for v in series[s][cursor[s]:cursor[s] + take]]
            cursor[s] += take
        sus = [rng.choice([0.0, 0.995, rng.random()]) for _ in pts]   # 0.995: past the default gate
        want = {i: f for i, ((s, v), su) in enumerate(zip(pts, sus, strict=True)) if (f := ref[s].observe(0.0, v, su))}
        got = cols.observe_batch([slots[s] for s, _ in pts], [v for _, v in pts], sus)
        assert got == want
        total += len(got)
        rules.update(f.rule for fs in got.values() for f in fs)
    for s, t in enumerate(ref):
        assert cols.state(slots[s]) == t.to_state()
    assert total > 10 and {"latency_increase", "error_rate_increase", "throughput_drop", "high_utilization",
                           "latency_drift"} <= rules, rules


def test_version_3_checkpoints_and_bad_bytes() -> None:
    t = TrendTracker.for_metric("Latency")
    for i in range(90):
        t.observe(0.0, 100.0 + i % 7, 0.5)
    v4 = t.to_state()
    v3 = bytes([3]) + v4[1:_tr._STATE.size] + v4[_tr._STATE.size + _tr._PEAK.size:]
    cols = TrendColumns()
    slot = cols.new_slot("latency")
    cols.load(slot, v3)
    assert cols.state(slot) == TrendTracker.from_state(v3, "latency").to_state()
    with pytest.raises(ValueError):
        cols.load(slot, v4[:-8])                        # another window size
    with pytest.raises(ValueError):
        TrendSlot.adopt(cols, TrendTracker("latency", SMALL))   # other parameters
    assert len(cols) == 1


@pytest.mark.parametrize("params", TREND_PARAMS + [TrendParams(error_increase=-1.0, throughput_drop=-0.2,
                                                               latency_increase=-0.1, std_k=0.0)])
def test_the_loops_rule_test_is_any_rule_holds(params: TrendParams) -> None:
    rng = random.Random(11)
    edge = [0.0, -0.0, 5e-324, 1e-300, 1.0, 80.0, 100.0, -3.0, 1e300, -1e300, math.inf, -math.inf, math.nan]
    stats = []
    for _ in range(6000):
        bm = rng.choice([rng.choice(edge), rng.uniform(-5, 200)])
        bs = rng.choice([rng.choice(edge), rng.uniform(0, 30)])
        cm = rng.choice([rng.choice(edge), bm + rng.uniform(-100, 100) * rng.choice([0.01, 0.3, 1.0])])
        stats.append((bm, bs, cm, rng.randrange(len(KINDS)), rng.randrange(len(UNITS))))
    got = [_rule_holds(b, s, c, k, u, params.std_k, params.latency_increase, params.error_increase,
                       params.utilization_max, params.throughput_drop) for b, s, c, k, u in stats]
    want = [any_rule_holds(b, s, c, KINDS[k], params, UNITS[u]) for b, s, c, k, u in stats]
    assert got == want
    assert 500 < sum(want) < 5500


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1e16, 1.0, -1.0, 1e-16]),
                          st.floats(-1e6, 1e6)), max_size=80))
def test_the_loops_fsum_is_math_fsum(xs: list[float]) -> None:
    """The compiled loop's re-summation gives math.fsum's bits, and declines exactly where fsum raises."""
    arr = np.array(xs, dtype=np.float64)
    got, ok = fsum_array(arr, len(xs), np.zeros(128))
    try:
        want = math.fsum(xs)
    except OverflowError:
        assert not ok
        return
    assert ok and struct.pack("<d", got) == struct.pack("<d", want), (xs, got, want)


# --- the series: detector, trends and bookkeeping ------------------------------------------------------
@st.composite
def series_cases(draw: st.DrawFn) -> tuple[TrendParams, list[tuple[str, str]], list[list[tuple[int, float, float, bool]]],
                                            list[int]]:
    params = draw(st.sampled_from(TREND_PARAMS))
    n_series = draw(st.integers(1, 7))
    # (metric name, how it is scored): columns, a trend of other parameters (per point beside the
    # columnar detector), or a River model (per point)
    specs = [(draw(st.sampled_from(NAMES)), draw(st.sampled_from(["columns"] * 6 + ["other trend", "river"])))
             for _ in range(n_series)]
    pts: list[tuple[int, float, float, bool]] = []
    for s in range(n_series):
        vals = _values(draw, draw(st.integers(0, 130)))
        step = draw(st.sampled_from([60.0, 3600.0, 86400.0 / 7]))
        jitter = draw(st.sampled_from([0.0, 30.0, 5000.0]))       # out-of-order arrival
        rng = random.Random(s)
        history = draw(st.sampled_from([0.0, 0.1, 1.0]))
        for i, v in enumerate(vals):
            t = 1.7e9 + step * i + (rng.uniform(-jitter, jitter) if jitter else 0.0)
            if rng.random() < 0.05 and pts:
                t = pts[-1][1]                                     # equal timestamps: arrival order decides
            if rng.random() < 0.3:
                v = min(max(v, -9e99), 9e99)   # mostly values the detector learns (beyond 1e100: gaps)
            pts.append((s, t, v, rng.random() < history))
    rng = random.Random(draw(st.integers(0, 1000)))
    pts.sort(key=lambda p: p[1] + rng.uniform(-4000.0, 4000.0))
    swaps = draw(st.lists(st.integers(0, n_series - 1), max_size=3))
    return params, specs, _cuts(draw, pts), swaps


def _model(name: str, how: str, params: TrendParams) -> SeriesModel:
    if how == "river":
        return SeriesModel.new(name, "gaussian")
    other = TrendParams(persist=2, clear=5) if params != TrendParams() else SMALL
    trend = _unit_tracker(name, other if how == "other trend" else params)
    return SeriesModel(name, KaizenDetector(DETECTOR), trend, "kaizen")


def _bookkeeping(m: SeriesModel) -> tuple[Any, ...]:
    recent = [struct.pack("<ddd", *p) for p in m.recent]
    return m.since_alarm, m.since_cp, struct.pack("<d", m.last_score), recent


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(series_cases())
def test_score_groups_equal_series_model_observe(case: tuple) -> None:
    params, specs, batches, swaps = case
    cols = DetectorColumns(DETECTOR, capacity=1)
    series_columns_of(cols, params)   # the columns' series book, of these trend parameters
    ref = [_model(n, how, params) for n, how in specs]
    live = [_model(n, how, params) for n, how in specs]
    try:
        for b, pts in enumerate(batches):
            by: dict[int, list[dict[str, Any]]] = {}
            for s, t, v, h in pts:
                by.setdefault(s, []).append({"timestamp": t, "value": v, "history": h})
            for group in by.values():
                group.sort(key=lambda p: p["timestamp"])     # as the metric stage does (stable)
            order = list(by)

            def want(by: dict[int, list[dict[str, Any]]] = by, order: list[int] = order) -> list[tuple[float, list]]:
                return [ref[s].observe(p["timestamp"], p["value"], p["history"]) for s in order for p in by[s]]

            def got(by: dict[int, list[dict[str, Any]]] = by, order: list[int] = order) -> tuple[Any, Any]:
                return score_groups(cols, [(live[s], by[s]) for s in order])

            w, (scores, found) = _both_raise(want, got)
            assert len(scores) == len(w)
            assert all(_same_bits(a, sc) for a, (sc, _) in zip(scores.tolist(), w, strict=True)), b
            assert {i: _key(f) for i, f in found.items()} == {i: _key(f) for i, (_, f) in enumerate(w) if f}, b
            for s in order:
                assert _bookkeeping(live[s]) == _bookkeeping(ref[s]), (b, s)
                if specs[s][1] != "river":   # a River model's pickle differs from one instance to the next
                    assert live[s].checkpoint(0.0) == ref[s].checkpoint(0.0), (b, s)
            if b < len(swaps):   # a partition move: each side restored from the other's checkpoint
                s = swaps[b]
                name, how = specs[s]
                mine, theirs = live[s].checkpoint(0.0), ref[s].checkpoint(0.0)
                spec = ref[s].spec
                ref[s] = SeriesModel.restore(name, mine, spec) if how == "river" else _restored(name, how, params, mine)
                live[s] = SeriesModel.restore(name, theirs, spec) if how == "river" else _restored(name, how, params, theirs)
    except _Raised:
        return


def _restored(name: str, how: str, params: TrendParams, data: bytes) -> SeriesModel:
    """SeriesModel.restore with the test's detector and trend parameters."""
    m = _model(name, how, params)
    nd, nt = struct.unpack_from("<II", data, 0)
    assert data[8:9] == b"K"     # models.scorer_state: kaizen's compact state
    m.detector = KaizenDetector.from_state(data[9:8 + nd], DETECTOR)
    t = m.trend
    assert isinstance(t, TrendTracker)
    m.trend = TrendTracker.from_state(data[8 + nd:8 + nd + nt], t.kind, t.p, t.error_unit)
    return m


def test_series_bookkeeping_survives_adoption_and_one_point_observe() -> None:
    """A model scored per point, then adopted into the columns, then observed one point at a time again:
    its recent points, counters and incident state carry over in both directions."""
    rng = random.Random(3)
    ref = SeriesModel("Latency", KaizenDetector(DETECTOR), TrendTracker.for_metric("Latency", SMALL))
    live = SeriesModel("Latency", KaizenDetector(DETECTOR), TrendTracker.for_metric("Latency", SMALL))
    cols = DetectorColumns(DETECTOR)
    series_columns_of(cols, SMALL)
    values = [100.0 + rng.gauss(0, 2) + (80.0 if 70 <= i < 100 else 0.0) for i in range(200)]
    for i, v in enumerate(values):
        t = 1.7e9 + 60.0 * i
        want = ref.observe(t, v)
        if i < 50 or i >= 150:
            got = live.observe(t, v)                 # per point (a ColumnSlot's one-point path after 50)
        else:
            scores, found = score_groups(cols, [(live, [{"timestamp": t, "value": v}])])
            got = (scores[0], found.get(0, []))
        assert got[0] == want[0] and _key(got[1]) == _key(want[1]), i
        assert _bookkeeping(live) == _bookkeeping(ref), i
    assert type(live.trend) is TrendSlot
    assert live.checkpoint(1.0) == ref.checkpoint(1.0)
    assert len(live.recent) == len(ref.recent) == 60
    # the summary of a series in the columns (numpy's rounding of the scores) and of one per point
    last = {"tenant_id": "t", "metric_name": "Latency", "namespace": "N", "component": "c", "dimensions": {},
            "statistic": "Average"}
    got, want = live.summary("k", last), ref.summary("k", last)
    assert [p[:2] for p in got["points"]] == [p[:2] for p in want["points"]]
    assert [p[2] for p in got["points"]] == pytest.approx([p[2] for p in want["points"]], abs=1e-9)
    assert {k: v for k, v in got.items() if k != "points"} == {k: v for k, v in want.items() if k != "points"}


def test_a_series_twice_in_one_batch_is_refused_before_anything_learns() -> None:
    cols = DetectorColumns(DETECTOR)
    m = SeriesModel("Latency", KaizenDetector(DETECTOR), TrendTracker.for_metric("Latency"))
    score_groups(cols, [(m, [{"timestamp": 0.0, "value": 1.0}])])
    before = m.checkpoint(0.0)
    with pytest.raises(ValueError):
        score_groups(cols, [(m, [{"timestamp": 1.0, "value": 1.0}]), (m, [{"timestamp": 2.0, "value": 1.0}])])
    assert m.checkpoint(0.0) == before


def test_a_tracker_state_the_columns_do_not_mirror_stays_per_point() -> None:
    """A checkpoint with a fill past the ring (corrupt; no tracker gets there, though it reads it: the fill
    is clamped at the next point) is refused by the columns: that series' trend is tracked per point
    beside the columnar detector, as before, and adopted once its state is one the columns mirror."""
    t = TrendTracker.for_metric("Latency")
    for i in range(80):
        t.observe(0.0, 100.0 + i % 5)
    head = list(_tr._STATE.unpack_from(t.to_state(), 0))
    head[1] = 70 + 5                                   # filled past the ring
    bad = _tr._STATE.pack(*head) + t.to_state()[_tr._STATE.size:]
    ref = SeriesModel("Latency", KaizenDetector(DETECTOR), TrendTracker.from_state(bad, "latency"))
    live = SeriesModel("Latency", KaizenDetector(DETECTOR), TrendTracker.from_state(bad, "latency"))
    cols = DetectorColumns(DETECTOR)
    for i in range(40):
        p = {"timestamp": 60.0 * i, "value": 100.0 + 3 * (i % 4)}
        scores, found = score_groups(cols, [(live, [p])])
        want = ref.observe(p["timestamp"], p["value"])
        assert scores[0] == want[0] and found.get(0, []) == want[1]
        assert (type(live.trend) is TrendTracker) == (i == 0)
    assert live.checkpoint(0.0) == ref.checkpoint(0.0)
