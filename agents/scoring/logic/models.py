"""One series' anomaly model behind one call shape (score then learn a timestamped value), with checkpoints."""

from __future__ import annotations

import math
import pickle
from typing import Any

from river import base as river_base
from river import compose

from agents.scoring.logic.calibration import RawScoreTail, ScoreCalibrator
from agents.scoring.logic.detectors import DEFAULT_PARAMS, KaizenDetector
from agents.scoring.logic.registry import build_model
from agents.scoring.logic.vectorised import ColumnSlot
from streams.errors import InputError

__all__ = ["CheckpointTooLarge", "RiverScorer", "new_scorer", "restore_scorer", "scorer_state"]

DEFAULT_CHECKPOINT_MAX_BYTES = 65_536
# A raw score beyond 99.9 % of the series' own scores (10**-RAW_DECADES rare) calibrates to 1, so the live
# threshold means the same for every River model (docs/detection.md).
RAW_DECADES = 3.0
_KAIZEN, _PICKLE = b"K", b"P"
KAIZEN_STATE = _KAIZEN  # the first byte of a checkpoint of kaizen's own detector (series.checkpoint_columns)


class CheckpointTooLarge(InputError):
    """A model whose checkpoint is over KAIZEN_DETECTOR_CHECKPOINT_MAX_BYTES."""


def _supervised(model: Any) -> bool:
    """River's supervised detectors (GaussianScorer, PredictiveAnomalyDetection) take the value as y."""
    if isinstance(model, river_base.AnomalyFilter):
        model = model.anomaly_detector
    if isinstance(model, compose.Pipeline):
        model = model.steps[list(model.steps)[-1]]
    return isinstance(model, river_base.SupervisedAnomalyDetector)


class RiverScorer:
    """Any River anomaly detector on one series: x = {"value": v} (supervised ones get y = v), score
    then learn; the raw score is calibrated per series (calibration.py) into [0, 1], so the one live
    threshold holds for every model. With calibrate=False the raw score is returned (benchmarks)."""

    __slots__ = ("spec", "model", "supervised", "n", "warmup", "tail", "cal", "calibrate", "surprise")

    def __init__(self, spec: str, model: Any, calibrate: bool = True) -> None:
        p = DEFAULT_PARAMS
        self.spec = spec
        self.model = model
        self.supervised = _supervised(model)
        self.n = 0
        self.warmup = p.warmup
        self.tail = RawScoreTail(RAW_DECADES)
        self.cal = ScoreCalibrator(p.rest)
        self.calibrate = calibrate
        self.surprise = 0.0    # the last point's calibrated score before the one-alarm-per-incident rule

    def score_learn(self, timestamp: float, value: float) -> float:
        del timestamp  # River models here see the value only (kaizen's detector also uses the time of day)
        v = float(value)
        if not math.isfinite(v):
            return 0.0
        m = self.model
        if self.supervised:
            raw = m.score_one({}, v)
            m.learn_one({}, v)
        else:
            x = {"value": v}
            raw = m.score_one(x)
            m.learn_one(x)
        raw = float(raw) if raw is not None and math.isfinite(raw) else 0.0
        if not self.calibrate:
            return raw
        s = self.tail.update(raw)
        self.n += 1
        if self.n <= self.warmup:
            self.surprise = 1.0    # no opinion yet: the trend rules alone decide (trends.py)
            return 0.0
        self.surprise = s if s < 1.0 else 1.0
        out = self.cal.step(s)
        return out if out < 1.0 else 1.0


def new_scorer(spec: str = "kaizen") -> KaizenDetector | RiverScorer:
    model = build_model(spec)
    return model if isinstance(model, KaizenDetector) else RiverScorer(spec, model)


def scorer_state(scorer: KaizenDetector | RiverScorer | ColumnSlot,
                 max_bytes: int = DEFAULT_CHECKPOINT_MAX_BYTES) -> bytes:
    """Checkpoint bytes: kaizen's compact state (a KaizenDetector's, or the same bytes of a row of the
    columnar form), or a pickle of any River model (size-limited)."""
    if isinstance(scorer, KaizenDetector | ColumnSlot):
        return _KAIZEN + scorer.to_state()
    data = _PICKLE + pickle.dumps(scorer, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > max_bytes:
        raise CheckpointTooLarge(
            f"the {scorer.spec!r} model checkpoints to {len(data)} bytes, over KAIZEN_DETECTOR_CHECKPOINT_MAX_BYTES="
            f"{max_bytes}: choose a smaller model for this metric family or raise the limit")
    return data


def restore_scorer(data: bytes, spec: str) -> KaizenDetector | RiverScorer:
    """The scorer of a checkpoint written by scorer_state; ValueError if it is of another model than
    `spec` (the configuration changed: the series starts afresh). Checkpoints are read only from the
    agent's own changelog topic."""
    kind, body = data[:1], data[1:]
    if kind == _KAIZEN:
        if spec != "kaizen":
            raise ValueError(f"checkpoint is of kaizen's detector, the series is now scored by {spec!r}")
        return KaizenDetector.from_state(body)
    if kind == _PICKLE:
        try:
            scorer = pickle.loads(body)  # noqa: S301 - our own changelog, written by scorer_state
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise ValueError(f"unreadable River model checkpoint: {exc}") from None
        if not isinstance(scorer, RiverScorer) or scorer.spec != spec:
            raise ValueError(f"checkpoint is of another model than {spec!r}")
        return scorer
    raise ValueError("unknown detector checkpoint format")
