"""SeriesModel: history points make no insight; a trend incident right after the detector's alarm is that incident."""

from __future__ import annotations

import random

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD
from agents.scoring.logic.models import RiverScorer
from agents.scoring.logic.series import INCIDENT_POINTS, SeriesModel

T0 = 1_700_000_000.0


def _feed(m: SeriesModel, values: list[float], start: int, history: bool = False) -> list[tuple[float, list[str]]]:
    return [(s, [f.rule for f in fs]) for i, v in enumerate(values)
            for s, fs in [m.observe(T0 + 60.0 * (start + i), v, history)]]


def _warming(spec: str = "gaussian") -> SeriesModel:
    """A series whose detector is still warming up: no opinion, so the trend rules alone decide."""
    m = SeriesModel.new("Latency", spec)
    assert isinstance(m.detector, RiverScorer)
    m.detector.warmup = 10_000
    return m


def test_history_points_are_learnt_but_make_no_trend_finding() -> None:
    rnd = random.Random(1)
    values = [100.0 + rnd.gauss(0, 2) for _ in range(80)] + [160.0 + rnd.gauss(0, 2) for _ in range(40)]
    got_live = _feed(_warming(), values, 0)
    got_hist = _feed(_warming(), values, 0, history=True)
    assert [r for _, r in got_live if r] == [["latency_increase"]]   # the live series: one trend incident
    assert not any(r for _, r in got_hist)                            # the same points as history: none
    hist = SeriesModel.new("Latency")
    live = SeriesModel.new("Latency")
    assert [s for s, _ in _feed(hist, values, 0, True)] == [s for s, _ in _feed(live, values, 0)]  # learnt alike


def test_a_trend_incident_inside_the_detector_incident_is_not_reported_again() -> None:
    rnd = random.Random(2)
    m = SeriesModel.new("Latency")
    _feed(m, [100.0 + rnd.gauss(0, 2) for _ in range(300)], 0)
    out = _feed(m, [180.0 + rnd.gauss(0, 2) for _ in range(60)], 300)
    alarms = [i for i, (s, _) in enumerate(out) if s >= ANOMALY_THRESHOLD]
    assert alarms and alarms[0] < 3, "the detector reports the shift at once"
    assert not any(r for _, r in out[:INCIDENT_POINTS]), "the trend rules repeat the detector's incident"
