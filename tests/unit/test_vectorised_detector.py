"""The columnar detector (agents/scoring/logic/vectorised.py) scores and learns exactly as KaizenDetector."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.scoring.logic.detectors import DEFAULT_PARAMS, DetectorParams, KaizenDetector
from agents.scoring.logic.trends import TrendParams, TrendTracker
from agents.scoring.logic.vectorised import DetectorColumns

# Small parameters reach every branch within a few dozen points: warm-up, grid freeze, likelihoods past
# their quiet period, seasonal slots scored, the recent maximum expiring (rescans), a tiny level table.
SMALL = DetectorParams(warmup=3, grid_at=12, bins=4, table_bits=4, short_win=3, val_short=2, quiet=2,
                       season_bins=4, season_min=1, season_after=0.05, rest=4)
WEEKLY = DetectorParams(warmup=5, grid_at=30, season_days=7, season_bins=6, season_min=2, quiet=4, rest=7,
                        adjacent=1.0)
PARAMS = [SMALL, WEEKLY, DEFAULT_PARAMS]

_SPECIAL = [math.nan, math.inf, -math.inf, 1e100, -1e100, 9.9e99, -9.9e99, 1e308, 0.0, -0.0, 5e-324, 1e-300]


@dataclass
class Run:
    """One columnar store and, beside it, one KaizenDetector per series."""

    params: DetectorParams
    cols: DetectorColumns
    slots: list[int]
    dets: list[KaizenDetector]
    log: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, params: DetectorParams, n_series: int) -> Run:
        cols = DetectorColumns(params, capacity=1)     # grows while slots are taken
        slots = [cols.new_slot() for _ in range(n_series)]
        return cls(params, cols, slots, [KaizenDetector(params) for _ in range(n_series)])

    def batch(self, pts: list[tuple[int, float, float]]) -> None:
        """The batch through both; scores and surprise equal bit for bit, point by point."""
        slots = np.array([self.slots[s] for s, _, _ in pts], np.int64)
        ts = np.array([t for _, t, _ in pts])
        vs = np.array([v for _, _, v in pts])
        got_err: type[BaseException] | None = None
        try:
            scores, surprise = self.cols.score_learn_batch(slots, ts, vs)
        except OverflowError:
            got_err = OverflowError
        # the reference: each series' points in time order, ties in arrival order
        order = sorted(range(len(pts)), key=lambda i: (pts[i][0], pts[i][1]))
        want = [0.0] * len(pts)
        want_sur = [0.0] * len(pts)
        try:
            for i in order:
                s, t, v = pts[i]
                want[i] = self.dets[s].score_learn(t, v)
                want_sur[i] = self.dets[s].surprise
        except OverflowError:
            assert got_err is OverflowError, "KaizenDetector overflowed, the columnar form did not"
            raise _Stop() from None
        assert got_err is None, "the columnar form overflowed, KaizenDetector did not"
        for i in range(len(pts)):
            assert _same(scores[i], want[i]), (i, pts[i], scores[i], want[i])
            assert _same(surprise[i], want_sur[i]), (i, pts[i], surprise[i], want_sur[i])

    def states_equal(self) -> None:
        for s, det in enumerate(self.dets):
            assert self.cols.state(self.slots[s]) == det.to_state(), f"series {s}"

    def swap(self, s: int) -> None:
        """A checkpoint crossing over: the store takes the detector's bytes, the detector the store's."""
        mine = self.cols.state(self.slots[s])
        theirs = self.dets[s].to_state()
        assert mine == theirs
        sur = self.dets[s].surprise
        self.cols.load(self.slots[s], theirs, sur)
        self.dets[s] = KaizenDetector.from_state(mine, self.params)
        self.dets[s].surprise = sur


class _Stop(Exception):
    pass


def _same(a: float, b: float) -> bool:
    return float(a) == b and math.copysign(1.0, float(a)) == math.copysign(1.0, b)


def _values(draw: st.DrawFn, n: int) -> list[float]:
    kind = draw(st.sampled_from(["noise", "flat", "steps", "wild", "tiny"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    base = draw(st.sampled_from([0.0, 1.0, 100.0, -50.0, 1e6, 1e-6]))
    out = []
    for _ in range(n):
        if kind == "noise":
            v = base + rng.gauss(0.0, 3.0) + (rng.random() < 0.05) * rng.choice([40.0, -40.0, 1e4])
        elif kind == "flat":
            v = base if rng.random() < 0.9 else base + rng.choice([1e-9, 1.0, 1e3])
        elif kind == "steps":
            v = base + rng.choice([0.0, 0.0, 0.0, 5.0, 5.0, 50.0])
        elif kind == "tiny":
            v = rng.choice([1e-210, 2e-210, 3e-210, 1e-200, 0.0, 1e50])
        else:
            v = rng.uniform(-1e99, 1e99) if rng.random() < 0.5 else rng.gauss(base, 1e3)
        if rng.random() < 0.04:
            v = rng.choice(_SPECIAL)
        out.append(v)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[DetectorParams, int, list[list[tuple[int, float, float]]], list[int]]:
    params = draw(st.sampled_from(PARAMS[:2]))
    n_series = draw(st.integers(1, 7))
    per = draw(st.integers(0, 120))
    pts: list[tuple[int, float, float]] = []
    for s in range(n_series):
        vals = _values(draw, per + draw(st.integers(0, 20)))
        step = draw(st.sampled_from([60.0, 3600.0, 7 * 3600.0 + 0.5, 86400.0 / 7]))
        t0 = draw(st.sampled_from([0.0, 1.7e9, -1e6, -0.25, 1e11]))
        jitter = draw(st.sampled_from([0.0, 30.0, 5000.0]))   # out-of-order arrival
        rng = random.Random(s)
        for i, v in enumerate(vals):
            t = t0 + step * i + (rng.uniform(-jitter, jitter) if jitter else 0.0)
            if rng.random() < 0.03 and pts:
                t = pts[-1][1]                               # equal timestamps: arrival order decides
            pts.append((s, t, v))
    random.Random(draw(st.integers(0, 1000))).shuffle(pts)
    # interleave loosely by time so batches hold a few points of each series, as messages do
    pts.sort(key=lambda p: p[1] + random.Random(int(p[1]) ^ p[0]).uniform(-4000.0, 4000.0))
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(pts), 1)), max_size=12))))
    batches = []
    prev = 0
    for c in cuts + [len(pts)]:
        if c > prev:
            batches.append(pts[prev:c])
            prev = c
    swaps = draw(st.lists(st.integers(0, n_series - 1), max_size=3))
    return params, n_series, batches, swaps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_columnar_scores_and_state_equal_the_detector(case: tuple) -> None:
    params, n_series, batches, swaps = case
    run = Run.new(params, n_series)
    try:
        for b, pts in enumerate(batches):
            run.batch(pts)
            if b < len(swaps):
                run.swap(swaps[b])
    except _Stop:
        return
    run.states_equal()


def _series(seed: int, n: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    base = rng.uniform(10.0, 500.0)
    out = []
    for i in range(n):
        ts = 1_700_000_000.0 + 90.0 * i         # 17.5 hours and more: the daily profile is scored after 12
        v = base + 10.0 * math.sin(i / 40.0) + rng.gauss(0.0, 2.0)
        if 350 < i < 370 + seed % 7 or i % 211 == 5:
            v += 60.0 + 20.0 * seed % 3          # incidents: alarms, then the recent maximum expires
        if i % 97 == 13:
            v = math.nan
        out.append((ts, v))
    return out


@pytest.mark.parametrize("seed", [1, 12])
def test_default_parameters_over_long_series(seed: int) -> None:
    """Default parameters: warm-up, grid freeze at 300 points, daily slots, alarms and rescans."""
    series = [_series(seed, 700 + 13 * seed) for seed in range(9)]
    run = Run.new(DEFAULT_PARAMS, len(series))
    rng = random.Random(seed)
    cursor = [0] * len(series)
    while any(c < len(s) for c, s in zip(cursor, series, strict=True)):
        batch: list[tuple[int, float, float]] = []
        for s, pts in enumerate(series):
            take = rng.choice([0, 1, 1, 1, 2, 5])
            for t, v in pts[cursor[s]:cursor[s] + take]:
                batch.append((s, t, v))
            cursor[s] += take
        rng.shuffle(batch)
        run.batch(batch)
    run.states_equal()
    assert all(d.n_seen > DEFAULT_PARAMS.grid_at for d in run.dets)


def test_restore_round_trip_and_bad_checkpoints() -> None:
    det = KaizenDetector()
    det.score_many(_series(3, 500))
    cols = DetectorColumns()
    slot = cols.add_state(det.to_state())
    assert cols.state(slot) == det.to_state()
    assert cols.detector(slot).to_state() == det.to_state()
    with pytest.raises(ValueError):
        cols.add_state(det.to_state()[:-1])
    with pytest.raises(ValueError):
        cols.add_state(KaizenDetector(SMALL).to_state())   # other parameters
    assert len(cols) == 1
    fresh = cols.new_slot()
    assert cols.state(fresh) == KaizenDetector().to_state()
    cols.release(slot)
    again = cols.new_slot()
    assert again == slot and cols.state(again) == KaizenDetector().to_state()


def test_memory_per_series_is_small() -> None:
    cols = DetectorColumns(capacity=1024)
    assert cols.nbytes() / 1024 < 2500   # the row; the live SeriesModel around it adds the trend ring


def test_a_level_bin_past_the_float_range_overflows_in_both() -> None:
    """A grid frozen on values 1e-210 apart puts 1e99 in bin 4e309: math.floor raises, and so do the columns."""
    run = Run.new(SMALL, 1)
    pts = [(0, 60.0 * i, (1 + i % 2) * 1e-210) for i in range(SMALL.grid_at)] + [(0, 1e6, 1e99)]
    with pytest.raises(_Stop):
        run.batch(pts)


def test_series_models_scored_in_columns_equal_per_point_observe() -> None:
    """The live path's observe_groups (columns for kaizen series, per point for a River model) gives each
    point the score and trend findings SeriesModel.observe gives, and the same checkpoints."""
    from agents.scoring.logic.series import SeriesModel, observe_groups

    names = ["Latency", "5XXError", "CPUUtilization", "Invocations", "Latency"]
    specs = ["kaizen", "kaizen", "kaizen", "kaizen", "sad"]
    series = [_series(seed, 450) for seed in range(len(names))]
    for s in series[:3] + series[4:]:                 # a sustained rise: the kaizen detector alarms (the
        for i in range(380, 450):                     # trend rules' incident is then that one), River's
            s[i] = (s[i][0], s[i][1] * 1.8)           # calibrated SAD does not and the trend rules fire
    for i in range(300, 370):                         # a busy period, then traffic back to normal: the
        series[3][i] = (series[3][i][0], series[3][i][1] * 1.3)   # throughput_drop rule fires (kaizen)
    ref = [SeriesModel.new(n, sp) for n, sp in zip(names, specs, strict=True)]
    live = [SeriesModel.new(n, sp) for n, sp in zip(names, specs, strict=True)]
    loose = TrendParams(persist=5, clear=30, unusual=0.7)   # a looser gate than the shipped one: rules fire
    for m in ref + live:
        m.trend = TrendTracker(m.trend.kind, loose, m.trend.error_unit)
    cols = DetectorColumns()
    rng = random.Random(5)
    cursor = [0] * len(series)
    findings = 0
    while any(c < len(s) for c, s in zip(cursor, series, strict=True)):
        groups = []
        want = []
        for k, pts in enumerate(series):
            take = pts[cursor[k]:cursor[k] + rng.choice([0, 1, 3])]
            cursor[k] += len(take)
            if take:
                batch = [{"timestamp": t, "value": v, "history": rng.random() < 0.05} for t, v in take]
                groups.append((live[k], batch))
                want.append([ref[k].observe(t, v, bool(p["history"])) for (t, v), p in zip(take, batch, strict=True)])
        scores, found = observe_groups(cols, groups)
        flat = [w for res in want for w in res]
        assert scores == [sc for sc, _ in flat]
        assert found == {i: f for i, (_, f) in enumerate(flat) if f}
        findings += len(found)
    assert findings > 0
    for a, b in zip(ref, live, strict=True):
        assert a.checkpoint(0.0) == b.checkpoint(0.0)
        assert SeriesModel.restore(b.metric_name, b.checkpoint(0.0), b.spec).checkpoint(0.0) == a.checkpoint(0.0)


def test_a_point_without_a_usable_time_raises_in_both() -> None:
    """A NaN or infinite timestamp has no time-of-day slot: KaizenDetector raises ValueError (int(nan)), and
    the columns raise it before changing anything; a gap value (NaN) needs no slot and passes in both."""
    det = KaizenDetector()
    cols = DetectorColumns()
    slot = cols.new_slot()
    for ts in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            det.score_learn(ts, 1.0)
        with pytest.raises(ValueError):
            cols.score_batch([slot, slot], [0.0, ts], [1.0, 2.0])
        assert det.score_learn(ts, math.nan) == 0.0
        assert cols.score_batch([slot], [ts], [math.nan]).tolist() == [0.0]
    # KaizenDetector has taken the value's range in before it raised; the columns changed nothing
    assert cols.state(slot) == KaizenDetector().to_state()
