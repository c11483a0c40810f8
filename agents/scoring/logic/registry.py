"""Detector choice per metric family: registry names and safely parsed River expressions (KAIZEN_DETECTORS)."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from river import base as river_base
from river import compose

from agents.scoring.logic.detectors import KaizenDetector
from streams.errors import ConfigError

__all__ = ["REGISTRY", "DetectorChoice", "DetectorConfigError", "build_model", "parse_detectors"]

# River modules an expression may name; anything else (os, builtins, river.utils internals) is refused.
_MODULES = frozenset({"anomaly", "preprocessing", "time_series", "linear_model", "stats", "proba", "compose",
                      "optim", "feature_extraction", "neighbors", "tree", "naive_bayes"})

# Registry names (a name, not an expression). "kaizen" is the default for every series.
REGISTRY: dict[str, str] = {
    "kaizen": "kaizen",
    "gaussian": "river.anomaly.GaussianScorer(window_size=500)",
    "hst": "river.preprocessing.MinMaxScaler() | river.anomaly.HalfSpaceTrees(n_trees=10, height=8, "
           "window_size=250, seed=42)",
    "sad": "river.anomaly.StandardAbsoluteDeviation()",
    "pad": "river.anomaly.PredictiveAnomalyDetection(river.time_series.SNARIMAX(p=3, d=1, q=1), n_std=3.0, "
           "warmup_period=50)",
}


# What a River constructor or a first learn_one may raise on arguments of the wrong kind.
_MODEL_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError)


class DetectorConfigError(ConfigError):
    """A detector spec that cannot be used; the message says which and why."""


def _literal(node: ast.expr) -> Any:
    """A literal argument (number, string, bool, None, and tuples/lists/dicts of them) or a nested
    River constructor; nothing else is evaluated."""
    if isinstance(node, ast.Call | ast.BinOp):
        return _build(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd) \
            and isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, int | float):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise DetectorConfigError("'**' is not allowed in a detector expression")
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    raise DetectorConfigError(f"only literals and river constructors are allowed, not {ast.unparse(node)!r}")


def _constructor(func: ast.expr) -> type:
    """river.<module>.<Class> (a River estimator or statistic class), resolved without eval."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id != "river" or len(parts) != 2:
        raise DetectorConfigError("a constructor must be written river.<module>.<Class>(...)")
    cls_name, module = parts
    if module not in _MODULES:
        raise DetectorConfigError(f"river.{module} is not an allowed module ({', '.join(sorted(_MODULES))})")
    if cls_name.startswith("_"):
        raise DetectorConfigError(f"river.{module}.{cls_name} is private")
    obj = getattr(importlib.import_module(f"river.{module}"), cls_name, None)
    if not isinstance(obj, type) or not issubclass(obj, river_base.Base):
        raise DetectorConfigError(f"river.{module}.{cls_name} is not a River class")
    return obj


def _build(node: ast.expr) -> Any:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _build(node.left) | _build(node.right)     # a River pipeline, as in River itself
    if not isinstance(node, ast.Call):
        raise DetectorConfigError(f"expected a river constructor, got {ast.unparse(node)!r}")
    cls = _constructor(node.func)
    if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
        raise DetectorConfigError("'*' and '**' are not allowed in a detector expression")
    args = [_literal(a) for a in node.args]
    kwargs = {k.arg: _literal(k.value) for k in node.keywords if k.arg is not None}
    try:
        return cls(*args, **kwargs)
    except _MODEL_ERRORS as exc:
        raise DetectorConfigError(f"{ast.unparse(node)}: {exc}") from None


def _is_detector(model: Any) -> bool:
    last = model.steps[list(model.steps)[-1]] if isinstance(model, compose.Pipeline) else model
    return isinstance(last, river_base.AnomalyDetector | river_base.SupervisedAnomalyDetector
                      | river_base.AnomalyFilter)


def is_kaizen(spec: str) -> bool:
    """Whether build_model(spec) is kaizen's own detector with its default parameters."""
    return REGISTRY.get(spec.strip(), spec.strip()) == "kaizen"


def build_model(spec: str) -> Any:
    """A fresh model for a spec: a registry name or a River expression (parsed, never evaluated)."""
    if is_kaizen(spec):
        return KaizenDetector()
    text = REGISTRY.get(spec.strip(), spec.strip())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise DetectorConfigError(f"{spec!r} is neither a registry name ({', '.join(REGISTRY)}) nor a River "
                                  f"expression: {exc.msg}") from None
    model = _build(tree.body)
    if not _is_detector(model):
        raise DetectorConfigError(f"{spec!r} is not a River anomaly detector")
    return model


class DetectorChoice:
    """Which spec scores a series: the first family (metric-name glob, or `unit:<Unit>`) that matches,
    in the order given, "*" last; series no family matches get "kaizen"."""

    def __init__(self, families: Mapping[str, str]) -> None:
        self.families = [(k, v) for k, v in families.items() if k != "*"]
        self.default = families.get("*", "kaizen")
        self.factories: dict[str, Callable[[], Any]] = {}

    def spec_for(self, metric_name: str, unit: str = "") -> str:
        for pattern, spec in self.families:
            if pattern.startswith("unit:"):
                if unit and pattern[5:].lower() == unit.lower():
                    return spec
            elif fnmatch.fnmatchcase(metric_name, pattern):
                return spec
        return self.default


def parse_detectors(raw: str | Mapping[str, str] | None, max_checkpoint_bytes: int | None = None) -> DetectorChoice:
    """Validate KAIZEN_DETECTORS (a JSON object family -> spec): every spec is built once, and, when a
    limit is given, a fresh model's checkpoint must fit it. Raises DetectorConfigError saying which."""
    import pickle

    if raw is None or raw == "":
        families: Mapping[str, str] = {}
    elif isinstance(raw, str):
        try:
            families = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DetectorConfigError(f"not a JSON object: {exc.msg}") from None
    else:
        families = raw
    if not isinstance(families, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in families.items()):
        raise DetectorConfigError('expected a JSON object of "metric glob or unit:<Unit>": "detector spec"')
    from agents.scoring.logic.models import RiverScorer

    for family, spec in families.items():
        try:
            model = build_model(spec)
            if not isinstance(model, KaizenDetector):
                probe = RiverScorer(spec, build_model(spec))
                for i in range(3):  # a model that cannot learn a value fails now, not in the worker
                    probe.score_learn(60.0 * i, float(i))
        except DetectorConfigError as exc:
            raise DetectorConfigError(f"family {family!r}: {exc}") from None
        except _MODEL_ERRORS as exc:
            raise DetectorConfigError(f"family {family!r}: {spec!r} fails on a value: {exc}") from None
        if max_checkpoint_bytes is not None and not isinstance(model, KaizenDetector):
            size = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            if size > max_checkpoint_bytes:
                raise DetectorConfigError(
                    f"family {family!r}: a fresh {spec!r} checkpoints to {size} bytes, over "
                    f"KAIZEN_DETECTOR_CHECKPOINT_MAX_BYTES={max_checkpoint_bytes}")
    return DetectorChoice(families)
