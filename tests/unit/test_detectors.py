"""Unit tests of the per-series anomaly detector."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Hashable
from typing import Any

import pytest
from river import base as river_base

from agents.scoring.logic.detectors import (
    ANOMALY_THRESHOLD,
    DEFAULT_PARAMS,
    DetectorParams,
    KaizenDetector,
    score_series,
)
from agents.scoring.logic.vectorised import DetectorColumns


def _noisy(n: int, seed: int = 7, mean: float = 100.0, sd: float = 5.0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(1_700_000_000.0 + 60.0 * i, rng.gauss(mean, sd)) for i in range(n)]


def test_scores_are_in_unit_interval_for_awkward_inputs() -> None:
    rng = random.Random(1)
    pts = _noisy(600)
    pts += [(0.0, 1e12), (0.0, -1e12), (0.0, math.nan), (0.0, math.inf), (0.0, 0.0), (0.0, 1e308)]
    pts += [(0.0, rng.choice([0.0, 1.0, 1e6])) for _ in range(400)]
    scores = score_series(pts)
    assert len(scores) == len(pts)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_detector_survives_garbage_and_still_detects() -> None:
    det = KaizenDetector()
    det.score_many(_noisy(1000))
    for bad in (math.nan, math.inf, -math.inf, 1e308, -1e308):
        assert det.score_learn(0.0, bad) == 0.0
    seen = det.n_seen
    assert seen == 1000
    after = det.score_many([(t + 1e6, v + 80.0) for t, v in _noisy(20, seed=9)])
    assert max(after) >= ANOMALY_THRESHOLD


def test_warmup_scores_are_zero_even_for_wild_values() -> None:
    det = KaizenDetector()
    rng = random.Random(2)
    warm = [det.score_learn(float(i), rng.choice([0.0, 1e9])) for i in range(DEFAULT_PARAMS.warmup)]
    assert warm == [0.0] * DEFAULT_PARAMS.warmup
    assert det.n_seen == DEFAULT_PARAMS.warmup


def test_level_shift_is_flagged_quickly() -> None:
    pts = _noisy(1500)
    shift_at = len(pts)
    pts += [(t + 1e6, v + 60.0) for t, v in _noisy(50, seed=8)]  # +12 sigma
    scores = score_series(pts)
    assert max(scores[shift_at:shift_at + 5]) >= ANOMALY_THRESHOLD


def test_steady_bounded_noise_stays_quiet() -> None:
    for seed in range(3):
        rng = random.Random(seed)
        scores = score_series([(60.0 * i, rng.uniform(90.0, 110.0)) for i in range(5000)])
        # at most one alarm: a value just past the range seen while the grid was set is a new level
        assert sum(s >= ANOMALY_THRESHOLD for s in scores) <= 1, seed
        assert sorted(scores)[int(0.99 * len(scores))] < 0.5


def test_steady_gaussian_noise_alarms_rarely() -> None:
    # Unbounded noise keeps setting new extremes, and a value in a never-visited level is what the
    # level signal reports (it is how NAB's level shifts are caught); it must stay rare.
    for seed in range(3):
        scores = score_series(_noisy(5000, seed=seed))
        alarms = sum(s >= ANOMALY_THRESHOLD for s in scores)
        assert alarms <= 5, seed
        assert sorted(scores)[int(0.99 * len(scores))] < 0.5


def test_spike_gives_one_alarm_not_a_burst() -> None:
    pts = _noisy(1500)
    pts[1200] = (pts[1200][0], 400.0)
    scores = score_series(pts)
    alarms = [i for i, s in enumerate(scores) if s >= ANOMALY_THRESHOLD]
    assert alarms and alarms[0] == 1200
    assert len([i for i in alarms if 1200 <= i < 1200 + DEFAULT_PARAMS.rest]) == 1


def test_score_many_matches_score_learn_loop() -> None:
    pts = _noisy(900) + [(t, v * 3) for t, v in _noisy(300, seed=3)]
    a, b = KaizenDetector(), KaizenDetector()
    loop = [a.score_learn(t, v) for t, v in pts]
    batch = b.score_many(pts[:500]) + b.score_many(pts[500:])
    assert loop == batch == score_series(pts)


@pytest.mark.parametrize("cut", [10, 400, 1200])
def test_checkpoint_round_trip_continues_identically(cut: int) -> None:
    pts = _noisy(1200) + [(t, v + 40.0) for t, v in _noisy(600, seed=4)]
    original = KaizenDetector()
    original.score_many(pts[:cut])
    state = original.to_state()
    assert state == original.to_state()          # deterministic
    assert len(state) <= 8 * 1024                # compact
    restored = KaizenDetector.from_state(state)
    assert restored.n_seen == original.n_seen
    assert restored.score_many(pts[cut:]) == original.score_many(pts[cut:])
    assert restored.to_state() == original.to_state()


def test_checkpoint_rejects_other_parameters() -> None:
    det = KaizenDetector()
    det.score_many(_noisy(50))
    with pytest.raises(ValueError):
        KaizenDetector.from_state(det.to_state(), DetectorParams(rest=DEFAULT_PARAMS.rest + 1))


def test_params_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_PARAMS.rest = 3  # type: ignore[misc]


def test_recent_max_matches_naive_window() -> None:
    from array import array

    from agents.scoring.logic.detector_parts import RecentMax

    rng = random.Random(11)
    for size in (1, 3, 17):
        rm = RecentMax(size)
        naive = array("f", [0.0] * size)
        for i in range(3000):
            v = rng.choice([0.0, 1.0, rng.random(), rng.random() ** 8])
            assert rm.push(v) == max(naive), (size, i)
            naive[i % size] = v
        clone = RecentMax(size)
        clone.unpack(rm.pack(), 0)
        assert clone.push(0.5) == rm.push(0.5)


def _x(t: float, v: float) -> dict[Hashable, Any]:
    return {"value": v, "timestamp": t}


def test_river_api_score_one_then_learn_one_equals_the_fused_path() -> None:
    pts = _noisy(3000, seed=11)
    pts[2000] = (pts[2000][0], 400.0)               # an incident, so the scores are not all 0
    det = KaizenDetector()
    assert isinstance(det, river_base.AnomalyDetector)
    river_scores = []
    for t, v in pts:
        s = det.score_one(_x(t, v))
        assert det.score_one(_x(t, v)) == s         # score_one learns nothing
        det.learn_one(_x(t, v))
        river_scores.append(s)
    assert river_scores == score_series(pts)
    assert max(river_scores) >= ANOMALY_THRESHOLD


def test_river_clone_is_fresh_with_the_same_parameters() -> None:
    det = KaizenDetector(DetectorParams(rest=50))
    det.score_many(_noisy(500))
    twin = det.clone()
    assert isinstance(twin, KaizenDetector) and twin.n_seen == 0 and twin.params == det.params
    pts = _noisy(800, seed=3)
    assert twin.score_many(pts) == score_series(pts, DetectorParams(rest=50))


def test_pickle_round_trip_gives_equal_scores() -> None:
    det = KaizenDetector()
    det.score_many(_noisy(1500, seed=5))
    copy = pickle.loads(pickle.dumps(det))
    later = _noisy(600, seed=6) + [(1_700_000_000.0 + 60.0 * 4000, 500.0)]
    assert [copy.score_one(_x(t, v)) for t, v in later[:50]] == [det.score_one(_x(t, v)) for t, v in later[:50]]
    a, b = det.score_many(later), copy.score_many(later)
    assert a == b and max(a) >= ANOMALY_THRESHOLD


def test_plain_river_program_without_timestamps() -> None:
    """x = {"value": v} alone works (points are taken one minute apart), as in a River tutorial."""
    from agents.scoring.logic.detectors import KaizenDetector as Detector

    model = Detector()
    rng = random.Random(2)
    scores = []
    for i in range(1200):
        x = {"value": 500.0 if i == 1100 else rng.gauss(10.0, 1.0)}
        scores.append(model.score_one(x))
        model.learn_one(x)
    assert scores[1100] >= ANOMALY_THRESHOLD and sum(s >= ANOMALY_THRESHOLD for s in scores) <= 2


def _daily_peak(days: int, seed: int) -> list[tuple[float, float]]:
    """5-minute points: ~0 all day, ~100 from 12:00 to 13:00 (UTC) every day — a usual daily peak."""
    rng = random.Random(seed)
    t0 = 1_699_920_000.0  # midnight UTC
    return [(t0 + 300.0 * i, (100.0 if 144 <= i % 288 < 156 else 0.0) + rng.gauss(0.0, 1.0))
            for i in range(288 * days)]


def test_profile_residual_replaces_the_value_signal_once_it_may_score() -> None:
    """The daily peak is far from the all-hours level (the value signal), usual for its hour (the residual):
    alarming before the profile exists (days 0-1), quiet once the residual has replaced the value signal."""
    det = KaizenDetector()
    pts = _daily_peak(5, seed=3)
    peak: dict[int, float] = {}
    for i, (t, v) in enumerate(pts):
        det.score_learn(t, v)
        if 144 <= i % 288 < 156:
            peak[i // 288] = max(peak.get(i // 288, 0.0), det.surprise)
    assert peak[0] >= 0.9 and peak[1] >= 0.9
    assert max(peak[2], peak[3], peak[4]) < 0.5
    # the columnar form takes the same turn at the same point
    cols = DetectorColumns(DEFAULT_PARAMS, capacity=2)
    slot = cols.new_slot()
    ref = KaizenDetector()
    for t, v in pts:
        sc, su = cols.score_learn_batch([slot], [t], [v])
        assert float(sc[0]) == ref.score_learn(t, v) and float(su[0]) == ref.surprise
