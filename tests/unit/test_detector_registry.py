"""KAIZEN_DETECTORS: registry names and River expressions, parsed safely; per-family choice; checkpoints."""

from __future__ import annotations

import math
import random

import pytest
from river import anomaly, compose

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, KaizenDetector
from agents.scoring.logic.models import (
    CheckpointTooLarge,
    RiverScorer,
    new_scorer,
    restore_scorer,
    scorer_state,
)
from agents.scoring.logic.registry import DetectorConfigError, build_model, parse_detectors
from agents.scoring.logic.series import SeriesModel


def test_registry_names_and_expressions_build_river_detectors() -> None:
    assert isinstance(build_model("kaizen"), KaizenDetector)
    g = build_model("river.anomaly.GaussianScorer(window_size=500)")
    assert isinstance(g, anomaly.GaussianScorer) and g.window_size == 500
    assert isinstance(build_model("hst"), compose.Pipeline)
    f = build_model("river.anomaly.QuantileFilter(river.anomaly.HalfSpaceTrees(seed=1), q=0.95)")
    assert isinstance(f, anomaly.QuantileFilter) and f.q == 0.95
    assert isinstance(build_model("pad"), anomaly.PredictiveAnomalyDetection)


@pytest.mark.parametrize("spec, words", [
    ('__import__("os").system("true")', "river.<module>.<Class>"),
    ("river.os.system(1)", "not an allowed module"),
    ("river.anomaly._private()", "private"),
    ("river.anomaly.GaussianScorer(window_size=open('x'))", "river.<module>.<Class>"),
    ("river.anomaly.GaussianScorer(window_size=[x for x in 'ab'])", "only literals"),
    ("river.anomaly.GaussianScorer(**{'window_size': 3})", "not allowed"),
    ("river.anomaly.NoSuchThing()", "not a River class"),
    ("river.stats.Mean()", "not a River anomaly detector"),
    ("river.anomaly.GaussianScorer(window_size=", "neither a registry name"),
    ("river.anomaly.HalfSpaceTrees(n_trees='x')", "fails on a value"),
    ("river.anomaly.GaussianScorer(nope=1)", "unexpected keyword"),
])
def test_invalid_specs_are_refused_with_the_reason(spec: str, words: str) -> None:
    with pytest.raises(DetectorConfigError, match="family 'CPU\\*'") as err:
        parse_detectors({"CPU*": spec})
    assert words in str(err.value)


def test_malformed_settings_and_oversized_models_are_refused() -> None:
    with pytest.raises(DetectorConfigError, match="not a JSON object"):
        parse_detectors('{"*": ')
    with pytest.raises(DetectorConfigError, match="JSON object"):
        parse_detectors('{"*": 3}')
    with pytest.raises(DetectorConfigError, match="KAIZEN_DETECTOR_CHECKPOINT_MAX_BYTES=2000"):
        parse_detectors({"*": "river.anomaly.HalfSpaceTrees()"}, 2_000)


def test_settings_refuse_non_json_detectors(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from streams.settings import Settings

    monkeypatch.setenv("KAIZEN_DETECTORS", '{"*": ')
    with pytest.raises(ValidationError, match="not JSON"):
        Settings()
    monkeypatch.setenv("KAIZEN_DETECTORS", '{"CPU*": "gaussian"}')
    assert Settings().kaizen_detectors == {"CPU*": "gaussian"}


def test_family_choice_by_glob_unit_and_default() -> None:
    choice = parse_detectors({"*": "kaizen", "CPU*": "gaussian", "unit:Percent": "sad", "Latency": "pad"})
    assert choice.spec_for("CPUUtilization", "Percent") == "gaussian"     # first match in the given order
    assert choice.spec_for("MemoryUsed", "Percent") == "sad"
    assert choice.spec_for("Latency") == "pad"
    assert choice.spec_for("Errors", "Count") == "kaizen"
    assert parse_detectors("").spec_for("anything") == "kaizen"


def test_any_river_model_scores_calibrated_and_checkpoints_within_its_limit() -> None:
    rng = random.Random(4)
    model = SeriesModel.new("CPUUtilization", "river.anomaly.GaussianScorer(window_size=500)")
    assert isinstance(model.detector, RiverScorer)
    scores = [model.observe(60.0 * i, rng.gauss(50.0, 2.0))[0] for i in range(1500)]
    spike, _ = model.observe(60.0 * 1500, 95.0)
    assert all(0.0 <= s <= 1.0 for s in scores) and spike >= ANOMALY_THRESHOLD
    data = model.checkpoint(0.0)
    back = SeriesModel.restore("CPUUtilization", data, "river.anomaly.GaussianScorer(window_size=500)")
    nxt = [(60.0 * (1501 + i), rng.gauss(50.0, 2.0)) for i in range(200)]
    assert [back.observe(t, v)[0] for t, v in nxt] == [model.observe(t, v)[0] for t, v in nxt]
    with pytest.raises(ValueError, match="another model"):
        SeriesModel.restore("CPUUtilization", data, "kaizen")
    with pytest.raises(CheckpointTooLarge, match="KAIZEN_DETECTOR_CHECKPOINT_MAX_BYTES=100"):
        model.checkpoint(0.0, max_bytes=100)


def test_kaizen_checkpoint_is_compact_and_not_restored_as_another_model() -> None:
    det = new_scorer("kaizen")
    assert isinstance(det, KaizenDetector)
    det.score_many([(60.0 * i, math.sin(i)) for i in range(400)])
    data = scorer_state(det)
    assert len(data) < 4096
    assert isinstance(restore_scorer(data, "kaizen"), KaizenDetector)
    with pytest.raises(ValueError, match="now scored by"):
        restore_scorer(data, "gaussian")
