"""The batch forms of the metric stage's per-series bookkeeping give what the per-series calls give:
ScoringState.publishable against may_publish key by key, series.checkpoints_due against due_checkpoint,
series.checkpoint_columns against SeriesModel.checkpoint."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scoring import agent as scoring
from agents.scoring.logic.detectors import KaizenDetector
from agents.scoring.logic.series import (
    CHECKPOINT_COLUMNS_FROM,
    SeriesModel,
    checkpoint_columns,
    checkpoints_due,
    score_groups,
    series_columns_of,
)
from agents.scoring.logic.trend_columns import TrendSlot
from agents.scoring.logic.trends import TrendParams, TrendTracker
from agents.scoring.logic.vectorised import ColumnSlot, DetectorColumns

BATCHES = st.lists(st.tuples(st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=30),
                             st.sampled_from([0.0, 0.001, 0.4, 1.0, 2.5])), max_size=15)


@settings(max_examples=150, deadline=None)
@given(BATCHES, st.sampled_from([0, 1, 3, 8, 200]))
def test_publishable_lets_out_what_may_publish_does_key_by_key(batches: list[Any], budget: int) -> None:
    ref, live = scoring.ScoringState(None), scoring.ScoringState(None)  # type: ignore[arg-type]
    now = 1_700_000_000.5
    try:
        with mock.patch.object(scoring, "SERIES_PUBLISH_BUDGET", budget):
            for batch, step in batches:
                now += step
                keys = list(dict.fromkeys(f"s{k}" for k, _ in batch))  # a batch holds each series once
                urgent = np.array([dict(batch)[int(k[1:])] for k in keys], dtype=bool)
                want = [i for i, k in enumerate(keys) if ref.may_publish(k, now, bool(urgent[i]))]
                assert live.publishable(keys, urgent, now) == want
                assert live.last_publish == ref.last_publish
                assert (live.budget_second, live.budget_used) == (ref.budget_second, ref.budget_used)
    finally:
        scoring._STATES.remove(ref)
        scoring._STATES.remove(live)


def _model(kind: str) -> SeriesModel:
    if kind == "river":
        return SeriesModel.new("Latency", "gaussian")
    params = TrendParams(persist=2, clear=5) if kind == "other trend" else TrendParams()
    return SeriesModel("Latency", KaizenDetector(), TrendTracker.for_metric("Latency", params))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["columns"] * 4 + ["other trend", "river"]), min_size=1, max_size=8),
       st.lists(st.tuples(st.lists(st.integers(0, 7), max_size=20), st.floats(0.0, 50.0),
                          st.sets(st.integers(0, 7), max_size=3)), max_size=12))
def test_checkpoints_due_are_the_series_due_checkpoint(kinds: list[str], batches: list[Any]) -> None:
    """Series in the columns (counters read from them), beside series per point (a trend of other
    parameters, a River model), checkpointed now and then; every threshold asked after each batch."""
    cols = DetectorColumns(capacity=1)
    series_columns_of(cols)
    models = [_model(k) for k in kinds]
    now, t = 1_700_000_000.0, 1_700_000_000.0
    scored: set[int] = set()
    for picks, step, saved in batches:
        now += step
        chosen = list(dict.fromkeys(s for s in picks if s < len(models)))
        groups = []
        for s in chosen:
            t += 60.0
            groups.append((models[s], [{"timestamp": t, "value": 100.0 + s}]))
        score_groups(cols, groups)
        scored.update(chosen)
        for every_points in (1, 2, 5, 50):
            for every_seconds in (0.0, 10.0, 30.0):
                want = [i for i, m in enumerate(models) if m.due_checkpoint(now, every_points, every_seconds)]
                assert checkpoints_due(models, now, every_points, every_seconds) == want
        for s in saved:
            if s < len(models):
                models[s].checkpoint(now)
                assert models[s].cp_at == now and models[s].since_cp == 0
    for s in scored:  # (the columns are what is tested: a series scored there keeps its counters there)
        assert (models[s]._book is not None) == (kinds[s] == "columns")


NAMES = ["Latency", "ErrorRate", "CPUUtilization", "Invocations", "FreeableMemory"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(["columns"] * 5 + ["other trend", "river"])),
                min_size=CHECKPOINT_COLUMNS_FROM, max_size=CHECKPOINT_COLUMNS_FROM + 25),
       st.integers(0, 2**32 - 1), st.integers(1, 90))
def test_checkpoint_columns_packs_the_bytes_each_series_checkpoints(specs: list[tuple[str, str]], seed: int,
                                                                    rounds: int) -> None:
    """Twin series fed the same points, one set checkpointed in columns and the other one by one: the same
    bytes, the same counters after; None for the series outside the columns."""
    import random

    def series() -> tuple[DetectorColumns, list[SeriesModel]]:
        cols = DetectorColumns(capacity=1)
        series_columns_of(cols)
        models = []
        for name, how in specs:
            if how == "river":
                models.append(SeriesModel.new(name, "gaussian"))
            elif how == "other trend":
                trend = TrendTracker.for_metric(name, TrendParams(persist=2))
                models.append(SeriesModel(name, KaizenDetector(), trend))
            else:
                models.append(SeriesModel.new(name))
        return cols, models

    (cols_a, live), (cols_b, ref) = series(), series()
    rng = random.Random(seed)
    for r in range(rounds):
        values = [rng.choice([100.0 + rng.gauss(0, 3), rng.uniform(-1e6, 1e6), 0.0, 5e-324])
                  for _ in specs]
        for cols, models in ((cols_a, live), (cols_b, ref)):
            score_groups(cols, [(m, [{"timestamp": 1.7e9 + 60.0 * r, "value": v}])
                                for m, v in zip(models, values, strict=True)])
    got = checkpoint_columns(live, 123.0)
    packed = sum(how == "columns" for _, how in specs) >= CHECKPOINT_COLUMNS_FROM  # else each on its own
    for (_, how), g, m, w in zip(specs, got, live, ref, strict=True):
        if how != "columns" or not packed:
            assert g is None
            continue
        assert g == w.checkpoint(123.0)
        assert (m.since_cp, m.cp_at) == (w.since_cp, w.cp_at) == (0, 123.0)
        assert SeriesModel.restore(m.metric_name, g).checkpoint(0.0) == g


def test_checkpoint_columns_leaves_a_count_beyond_its_field_and_a_small_batch_to_each_series() -> None:
    cols = DetectorColumns(capacity=1)
    series_columns_of(cols)
    models = [SeriesModel.new("Latency") for _ in range(CHECKPOINT_COLUMNS_FROM)]
    score_groups(cols, [(m, [{"timestamp": 1.7e9, "value": 1.0}]) for m in models])
    assert checkpoint_columns(models[:-1], 0.0) == [None] * (CHECKPOINT_COLUMNS_FROM - 1)
    got = checkpoint_columns(models, 0.0)
    assert None not in got and got == [m.checkpoint(0.0) for m in models]
    det = models[3].detector
    assert isinstance(det, ColumnSlot)
    cols.n[det.slot] = 2**32   # beyond "<I": struct raises there, the columns leave it to the series
    assert checkpoint_columns(models, 0.0) == [None] * CHECKPOINT_COLUMNS_FROM
    assert models[0].since_cp == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(NAMES + ["Duration", "5XXError", "RequestCount"]), min_size=1, max_size=12),
       st.integers(0, 2**32 - 1), st.integers(1, 120))
def test_a_series_created_in_the_columns_is_a_new_series_adopted(names: list[str], seed: int, rounds: int) -> None:
    """SeriesModel.new_in_columns against new() adopted by score_groups at its first point: the same scores,
    findings, bookkeeping and checkpoints; a row freed by another series is reused as a fresh one."""
    import random

    rng = random.Random(seed)
    cols_a, cols_b = DetectorColumns(capacity=1), DetectorColumns(capacity=1)
    book_a = series_columns_of(cols_a)
    spare = SeriesModel.new_in_columns("Latency", cols_a)   # a row used, then freed: reused below
    score_groups(cols_a, [(spare, [{"timestamp": 1.7e9, "value": 5.0}])])
    assert isinstance(spare.detector, ColumnSlot) and isinstance(spare.trend, TrendSlot)
    cols_a.release(spare.detector.slot)
    book_a.trends.release(spare.trend.slot)
    live = [SeriesModel.new_in_columns(n, cols_a) for n in names]
    ref = [SeriesModel.new(n) for n in names]
    assert all(m._book is book_a for m in live)
    for r in range(rounds):
        values = [100.0 + rng.gauss(0, 3) + (rng.choice([0.0, 400.0]) if r > 40 else 0.0) for _ in names]
        got = score_groups(cols_a, [(m, [{"timestamp": 1.7e9 + 60.0 * r, "value": v}])
                                    for m, v in zip(live, values, strict=True)])
        want = score_groups(cols_b, [(m, [{"timestamp": 1.7e9 + 60.0 * r, "value": v}])
                                     for m, v in zip(ref, values, strict=True)])
        assert got[0].tolist() == want[0].tolist()
        rules = [{i: [f.rule for f in fs] for i, fs in found.items()} for found in (got[1], want[1])]
        assert rules[0] == rules[1]
    for m, w in zip(live, ref, strict=True):
        assert (m.since_alarm, m.since_cp, m.last_score, list(m.recent)) == (w.since_alarm, w.since_cp, w.last_score,
                                                                             list(w.recent))
        assert m.checkpoint(1.0) == w.checkpoint(1.0)


def test_a_series_of_other_parameters_or_another_model_is_not_created_in_the_columns() -> None:
    cols = DetectorColumns(capacity=1)
    series_columns_of(cols, TrendParams(persist=2))
    m = SeriesModel.new_in_columns("Latency", cols)
    assert m._book is None and isinstance(m.detector, KaizenDetector)
    pm = scoring.PartitionModels({}, cap=10)
    pm.columns = DetectorColumns(capacity=1)
    assert isinstance(pm.get("a", "Latency").detector, ColumnSlot)
    with mock.patch.object(scoring, "detector_choice", lambda: scoring.DetectorChoice({"*": "gaussian"})):
        assert not isinstance(pm.get("b", "Latency").detector, ColumnSlot)
