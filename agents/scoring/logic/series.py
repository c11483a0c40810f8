"""One metric series' live model: detector + trend tracker + recent points, and its insights."""

from __future__ import annotations

import struct
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np

from agents.scoring.logic.detectors import ANOMALY_THRESHOLD, DEFAULT_PARAMS, KaizenDetector
from agents.scoring.logic.models import (
    DEFAULT_CHECKPOINT_MAX_BYTES,
    KAIZEN_STATE,
    RiverScorer,
    new_scorer,
    restore_scorer,
    scorer_state,
)
from agents.scoring.logic.trend_columns import TrendColumns, TrendSlot
from agents.scoring.logic.trends import (
    DEFAULT_TREND_PARAMS,
    ErrorUnit,
    MetricKind,
    TrendFinding,
    TrendParams,
    TrendTracker,
    classify_metric,
    error_unit_for,
)
from agents.scoring.logic.vectorised import ColumnSlot, DetectorColumns
from streams.records import MetricDataPoint, TelemetryInsight

RECENT = 60  # recent (ts, value, score) kept per series for the dashboard and the read model
# A trend incident within this many points after the detector's alarm is that same incident.
INCIDENT_POINTS = 100
_HEAD = struct.Struct("<II")
_F64 = np.float64
_I64 = np.int64
_TIMESTAMP = itemgetter("timestamp")
_VALUE = itemgetter("value")


class SeriesModel:
    """Scores then learns each point; knows when it is due for a checkpoint.

    A series scored in columns (score_groups) keeps its trend tracker and its bookkeeping (points since
    the last alarm and since the checkpoint, the last score, the recent points) as a row of a
    SeriesColumns; the attributes below read and write that row then (`recent` is a copy)."""

    __slots__ = ("metric_name", "spec", "detector", "trend", "_cp_at", "_recent", "_last_score", "_since_cp",
                 "_since_alarm", "_book", "_row")

    def __init__(self, metric_name: str, detector: KaizenDetector | RiverScorer | ColumnSlot,
                 trend: TrendTracker | TrendSlot, spec: str = "kaizen") -> None:
        self.metric_name = metric_name
        self.spec = spec
        self.detector = detector
        self.trend = trend
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=RECENT)
        self._last_score = 0.0
        self._since_cp = 0
        self._cp_at = 0.0   # when the series was last checkpointed (0.0: never)
        self._since_alarm = INCIDENT_POINTS  # points since this series' last anomaly insight
        self._book: SeriesColumns | None = None   # the columns holding the trend and bookkeeping, once adopted
        self._row = -1

    @property
    def recent(self) -> deque[tuple[float, float, float]]:
        return self._recent if self._book is None else self._book.recent_of(self._row)

    @property
    def last_score(self) -> float:
        return self._last_score if self._book is None else float(self._book.last_score[self._row])

    @last_score.setter
    def last_score(self, value: float) -> None:
        if self._book is None:
            self._last_score = value
        else:
            self._book.last_score[self._row] = value

    @property
    def since_cp(self) -> int:
        return self._since_cp if self._book is None else int(self._book.since_cp[self._row])

    @since_cp.setter
    def since_cp(self, value: int) -> None:
        if self._book is None:
            self._since_cp = value
        else:
            self._book.since_cp[self._row] = value

    @property
    def cp_at(self) -> float:
        return self._cp_at if self._book is None else float(self._book.cp_at[self._row])

    @cp_at.setter
    def cp_at(self, value: float) -> None:
        if self._book is None:
            self._cp_at = value
        else:
            self._book.cp_at[self._row] = value

    @property
    def since_alarm(self) -> int:
        return self._since_alarm if self._book is None else int(self._book.since_alarm[self._row])

    @since_alarm.setter
    def since_alarm(self, value: int) -> None:
        if self._book is None:
            self._since_alarm = value
        else:
            self._book.since_alarm[self._row] = value

    @classmethod
    def new(cls, metric_name: str, spec: str = "kaizen") -> SeriesModel:
        """A fresh model; `spec` is the detector chosen for the series (registry name or River expression)."""
        return cls(metric_name, new_scorer(spec), TrendTracker.for_metric(metric_name), spec)

    @classmethod
    def new_in_columns(cls, metric_name: str, cols: DetectorColumns, spec: str = "kaizen") -> SeriesModel:
        """new(metric_name, spec) for a spec of kaizen's default detector (registry.is_kaizen), held in
        `cols` and the SeriesColumns beside it from the start: what new() and score_groups' adoption at
        the first point give, without building the per-series detector and tracker first (a message's new
        series come by the hundred). new() itself when the columns hold other parameters than the
        defaults."""
        book = series_columns_of(cols)
        if (cols.params is not DEFAULT_PARAMS and cols.params != DEFAULT_PARAMS) \
                or (book.trends.p is not DEFAULT_TREND_PARAMS and book.trends.p != DEFAULT_TREND_PARAMS):
            return cls.new(metric_name, spec)
        row = book.new_row(classify_metric(metric_name), error_unit_for(metric_name))
        m = cls(metric_name, ColumnSlot(cols, cols.new_slot()), TrendSlot(book.trends, row), spec)
        m._book, m._row = book, row
        return m

    def observe(self, ts: float, value: float, history: bool = False) -> tuple[float, list[TrendFinding]]:
        """Score then learn one point. A history point (read back when the series was discovered) is
        learnt the same way, but its trend findings are dropped: history makes no insight."""
        score = self.detector.score_learn(ts, value)
        return self.observe_scored(ts, value, score, self.detector.surprise, history)

    def observe_scored(self, ts: float, value: float, score: float, surprise: float,
                       history: bool = False) -> tuple[float, list[TrendFinding]]:
        """observe() of a point its detector already scored (`score`, and `surprise` after it): the
        columnar path scores the points of every series of a message at once (vectorised.py) and does
        this per series (SeriesColumns.track)."""
        findings = self.trend.observe(ts, value, surprise)
        if self._book is not None:
            return score, self._book.observe_one(self._row, ts, value, score, findings, history)
        if score >= ANOMALY_THRESHOLD:
            self._since_alarm = 0
        elif self._since_alarm < INCIDENT_POINTS:
            self._since_alarm += 1
            findings = []   # the incident the detector reported already: one insight per incident
        if history:
            findings = []
        self._last_score = score
        self._since_cp += 1
        self._recent.append((ts, value, score))
        return score, findings

    def due_checkpoint(self, now: float, every_points: int, every_seconds: float) -> bool:
        since = self.since_cp
        return since >= every_points or (since > 0 and now - self.cp_at >= every_seconds)

    def checkpoint(self, now: float, max_bytes: int = DEFAULT_CHECKPOINT_MAX_BYTES) -> bytes:
        """Raises models.CheckpointTooLarge for a River model over `max_bytes`."""
        self.since_cp = 0
        self.cp_at = now
        d = scorer_state(self.detector, max_bytes)
        t = self.trend.to_state()
        return _HEAD.pack(len(d), len(t)) + d + t

    @classmethod
    def restore(cls, metric_name: str, data: bytes, spec: str = "kaizen") -> SeriesModel:
        nd, nt = _HEAD.unpack_from(data, 0)
        off = _HEAD.size
        det = restore_scorer(data[off:off + nd], spec)
        kind = classify_metric(metric_name)
        base = TrendTracker.for_metric(metric_name)
        trend = TrendTracker.from_state(data[off + nd:off + nd + nt], kind, None, base.error_unit)
        return cls(metric_name, det, trend, spec)

    def summary(self, key: str, last: Mapping[str, Any]) -> dict[str, Any]:
        """The series for the dashboard and the read model; `last` is its newest point (a lean point,
        see streams/metric_codec.py). Scores are rounded to 4 decimals (numpy's rounding for a series in
        the columns: a summary there costs a few numpy calls, not a Python step per recent point)."""
        if self._book is None:
            pts = [[t, v, round(s, 4)] for t, v, s in self._recent]
        else:
            block = self._book.recent_block(self._row)
            block[:, 2] = np.round(block[:, 2], 4)
            pts = block.tolist()
        return {"series": key, "tenant_id": last["tenant_id"], "metric_name": last["metric_name"],
                "namespace": last["namespace"], "component": last["component"], "dimensions": last["dimensions"],
                "statistic": last["statistic"], "last_score": round(self.last_score, 4), "points": pts}


class SeriesColumns:
    """The columnar series of a DetectorColumns, one row each: the trend tracker (a row of `trends`) and,
    by the same row, SeriesModel's bookkeeping — points since the last alarm and since the checkpoint,
    the last score, and the recent (ts, value, score) as a ring. A message's points then cost no Python
    per point, nor per series, outside the rare series with a detector alarm or a trend finding."""

    def __init__(self, params: TrendParams | None = None, capacity: int = 64) -> None:
        self.trends = TrendColumns(params, capacity)
        self._cap = 0
        self.since_alarm = np.zeros(0, _I64)
        self.since_cp = np.zeros(0, _I64)
        self.cp_at = np.zeros(0, _F64)
        self.last_score = np.zeros(0, _F64)
        # the newest RECENT (ts, value, score) of each row: three rings, written by flat index (a third of
        # the cost of a 3-D fancy write)
        self.recent_ts = np.zeros((0, RECENT), _F64)
        self.recent_value = np.zeros((0, RECENT), _F64)
        self.recent_score = np.zeros((0, RECENT), _F64)
        self.recent_pos = np.zeros(0, _I64)             # where the next point goes
        self.recent_len = np.zeros(0, _I64)
        self._mark = np.zeros(0, _I64)                  # scratch: finds repeated rows
        self._fit()

    def _fit(self) -> None:
        """The bookkeeping arrays as long as the trend rows."""
        cap = len(self.trends.kind)
        if cap <= self._cap:
            return
        for name in ("since_alarm", "since_cp", "cp_at", "last_score", "recent_ts", "recent_value", "recent_score",
                     "recent_pos", "recent_len", "_mark"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._cap = cap

    def adopt(self, model: SeriesModel) -> bool:
        """Take the model's trend tracker and bookkeeping in as a row, when the tracker has the columns'
        parameters (False, and nothing changed, otherwise)."""
        trend = model.trend
        if type(trend) is not TrendTracker or (trend.p is not self.trends.p and trend.p != self.trends.p):
            return False
        try:
            slot = TrendSlot.adopt(self.trends, trend)
        except ValueError:    # a state the columns do not mirror (corrupt checkpoint): tracked per point
            return False
        row = slot.slot
        self._fit()
        self.since_alarm[row] = model._since_alarm
        self.since_cp[row] = model._since_cp
        self.cp_at[row] = model._cp_at
        self.last_score[row] = model._last_score
        self.recent_pos[row] = self.recent_len[row] = 0
        for ts, value, score in model._recent:
            self._remember(row, ts, value, score)
        model._recent.clear()
        model.trend = slot
        model._book = self
        model._row = row
        return True

    def new_row(self, kind: MetricKind, error_unit: ErrorUnit) -> int:
        """A row for a fresh series: a fresh tracker of that kind and unit, the bookkeeping a new
        SeriesModel starts with."""
        row = self.trends.new_slot(kind, error_unit)
        self._fit()
        self.since_alarm[row] = INCIDENT_POINTS
        self.since_cp[row] = self.recent_pos[row] = self.recent_len[row] = 0
        self.cp_at[row] = self.last_score[row] = 0.0
        return row

    def _remember(self, row: int, ts: float, value: float, score: float) -> None:
        at = int(self.recent_pos[row])
        self.recent_ts[row, at], self.recent_value[row, at], self.recent_score[row, at] = ts, value, score
        self.recent_pos[row] = (at + 1) % RECENT
        self.recent_len[row] = min(int(self.recent_len[row]) + 1, RECENT)

    def recent_block(self, row: int) -> np.ndarray:
        """The row's recent points, oldest first, as a new (n, 3) array of (ts, value, score). The ring is
        written from its start and fills before it wraps, so until it is full its points are its first n."""
        n = int(self.recent_len[row])
        block = np.stack((self.recent_ts[row], self.recent_value[row], self.recent_score[row]), axis=1)
        if n < RECENT:
            return block[:n]
        at = int(self.recent_pos[row])
        return np.concatenate((block[at:], block[:at])) if at else block

    def recent_of(self, row: int) -> deque[tuple[float, float, float]]:
        """The row's recent points, oldest first, as SeriesModel.recent holds them."""
        return deque(map(tuple, self.recent_block(row).tolist()), maxlen=RECENT)

    def observe_one(self, row: int, ts: float, value: float, score: float, findings: list[TrendFinding],
                    history: bool) -> list[TrendFinding]:
        """SeriesModel.observe_scored's bookkeeping of one point of the row (the trend observed already)."""
        since = int(self.since_alarm[row])
        if score >= ANOMALY_THRESHOLD:
            since = 0
        elif since < INCIDENT_POINTS:
            since += 1
            findings = []   # the incident the detector reported already: one insight per incident
        self.since_alarm[row] = since
        self.last_score[row] = score
        self.since_cp[row] += 1
        self._remember(row, ts, value, score)
        return [] if history else findings

    def check_distinct(self, rows: list[int]) -> None:
        """ValueError when a row (-1 aside) is in `rows` twice: a batch holds one group per series."""
        r = np.array(rows, _I64)
        r = r[r >= 0]
        seq = np.arange(len(r))
        self._mark[r] = seq
        if not (self._mark[r] == seq).all():
            raise ValueError("a series appears in two groups of one batch")

    def track(self, rows: list[int], counts: list[int], pts: list[Mapping[str, Any]], ts: np.ndarray,
              values: np.ndarray, scores: np.ndarray, surprise: np.ndarray) -> dict[int, list[TrendFinding]]:
        """SeriesModel.observe_scored of a batch of rows' points (each row's points consecutive, in time
        order; `pts` the points, for their history flag): the trend rules in one columnar call, the
        bookkeeping in numpy, a row with a detector alarm or a trend finding among its points walked
        point by point (incident suppression, history). Returns the findings by point index."""
        r = np.fromiter(rows, _I64, len(rows))
        single = len(r) == len(scores)           # one point per row, the usual message of many series
        if single:
            n: Any = 1
            pr = r
            last = scores
        else:
            n = np.fromiter(counts, _I64, len(counts))
            ends = np.cumsum(n)
            pr = np.repeat(r, n)
            last = scores[ends - 1]
        tfound = self.trends.observe_batch(pr, values, surprise)
        since = self.since_alarm.take(r)
        # counts up to INCIDENT_POINTS and stays there (a count set above it from outside stays as it is)
        after = np.where(since < INCIDENT_POINTS, np.minimum(since + n, INCIDENT_POINTS), since)
        found: dict[int, list[TrendFinding]] = {}
        alarms = np.flatnonzero(scores >= ANOMALY_THRESHOLD)
        if alarms.size or tfound:
            at = np.union1d(alarms, np.fromiter(tfound, _I64, len(tfound)))
            for g in (at if single else np.unique(np.searchsorted(ends, at, side="right"))).tolist():
                a, b = (g, g + 1) if single else (int(ends[g] - n[g]), int(ends[g]))
                after[g] = self._incidents(int(since[g]), a, b, pts, scores, tfound, found)
        self.since_alarm[r] = after
        self.since_cp[r] += n
        self.last_score[r] = last
        # the recent rings: each row's newest RECENT points (older ones would be overwritten anyway)
        start = self.recent_pos.take(r)
        if single:
            at = r * RECENT + start
            keep = None
        else:
            rank = np.arange(len(scores)) - np.repeat(ends - n, n)
            at = pr * RECENT + (np.repeat(start, n) + rank) % RECENT
            keep = rank >= np.repeat(n, n) - RECENT
            if keep.all():
                keep = None
        for ring, col in ((self.recent_ts, ts), (self.recent_value, values), (self.recent_score, scores)):
            ring.reshape(-1)[at if keep is None else at[keep]] = col if keep is None else col[keep]
        self.recent_pos[r] = (start + n) % RECENT
        self.recent_len[r] = np.minimum(self.recent_len.take(r) + n, RECENT)
        return found

    @staticmethod
    def _incidents(since: int, a: int, b: int, pts: list[Mapping[str, Any]], scores: np.ndarray,
                   tfound: dict[int, list[TrendFinding]], found: dict[int, list[TrendFinding]]) -> int:
        """The points a..b-1 of one row, as observe_scored walks them: a detector alarm restarts the
        incident, a trend finding within INCIDENT_POINTS after it is that incident (dropped), and a history
        point makes no finding. Returns the points since the last alarm after them."""
        for i, score in enumerate(scores[a:b].tolist(), start=a):
            findings = tfound.get(i)
            if score >= ANOMALY_THRESHOLD:
                since = 0
            elif since < INCIDENT_POINTS:
                since += 1
                findings = None
            if findings and not pts[i].get("history"):
                found[i] = findings
        return since


# The columnar series of each DetectorColumns: kept beside it, for as long as it lives (a partition's
# models, agents/scoring/fused.py), without a reference back to it.
_SERIES_COLUMNS: weakref.WeakKeyDictionary[DetectorColumns, SeriesColumns] = weakref.WeakKeyDictionary()


def series_columns_of(cols: DetectorColumns, params: TrendParams | None = None) -> SeriesColumns:
    """The SeriesColumns beside a detector's columns, created on first use (with trend `params`; only
    trackers of those parameters become rows of it)."""
    book = _SERIES_COLUMNS.get(cols)
    if book is None:
        book = _SERIES_COLUMNS[cols] = SeriesColumns(params, capacity=max(64, len(cols)))
    return book


def _adopt(model: SeriesModel, cols: DetectorColumns, book: SeriesColumns) -> ColumnSlot | None:
    """The model's detector as a row of `cols`, and its trend and bookkeeping as a row of `book`, adopted
    on first sight when they have the columns' parameters. Returns the detector's slot, None for a
    series scored per point (another River model); the trend stays per series when its parameters are
    not the columns' (model._book is not `book` then)."""
    det = model.detector
    if type(det) is KaizenDetector and det.params == cols.params:
        det = model.detector = ColumnSlot.adopt(cols, det)
    if not isinstance(det, ColumnSlot) or det.cols is not cols:
        return None
    if model._book is None:
        book.adopt(model)
    return det


def checkpoints_due(models: Sequence[SeriesModel], now: float, every_points: int, every_seconds: float
                    ) -> list[int]:
    """The indices, in order, of the models whose due_checkpoint(now, every_points, every_seconds) holds:
    read in one numpy step from the columns for the rows of the batch's SeriesColumns (every series of a
    message, when it is many: a call per series cost as much as scoring it), asked per model for the
    rest (a trend of other parameters, a series not adopted)."""
    book = next((m._book for m in models if m._book is not None), None)
    if book is None:
        return [i for i, m in enumerate(models) if m.due_checkpoint(now, every_points, every_seconds)]
    r = np.array([m._row if m._book is book else -1 for m in models], _I64)
    since = book.since_cp.take(r)   # (a -1 reads the last row: replaced below)
    due = (since >= every_points) | ((since > 0) & (now - book.cp_at.take(r) >= every_seconds))
    for i in np.flatnonzero(r < 0).tolist():
        due[i] = models[i].due_checkpoint(now, every_points, every_seconds)
    return np.flatnonzero(due).tolist()  # type: ignore[no-any-return]


# Below this many series a batch's checkpoints are packed one by one: the columnar packing's fixed cost
# (≈ 0.3 ms here, a gather per field) is that of ≈ 20 series packed alone (≈ 15 µs each).
CHECKPOINT_COLUMNS_FROM = 20


def checkpoint_columns(models: Sequence[SeriesModel], now: float) -> list[bytes | None]:
    """SeriesModel.checkpoint(now) of the models held in the columns (the detector a row of a
    DetectorColumns, the trend and bookkeeping a row of the SeriesColumns beside it), packed for all of
    them at once: the same bytes, the same counters reset, without a dozen scalar reads per series (the
    first point of a message's new series checkpoints them all). None for every other model, and for all
    when a count does not fit its field: the caller checkpoints those one by one."""
    out: list[bytes | None] = [None] * len(models)
    cols = next((m.detector.cols for m in models if type(m.detector) is ColumnSlot), None)
    book = None if cols is None else _SERIES_COLUMNS.get(cols)
    if cols is None or book is None:
        return out
    take: list[int] = []
    slots: list[int] = []
    trend_slots: list[int] = []
    for i, m in enumerate(models):
        d, t = m.detector, m.trend
        if m._book is book and isinstance(d, ColumnSlot) and d.cols is cols and isinstance(t, TrendSlot) \
                and t.cols is book.trends:
            take.append(i)
            slots.append(d.slot)
            trend_slots.append(t.slot)
    if len(take) < CHECKPOINT_COLUMNS_FROM:
        return out
    rows = np.array([models[i]._row for i in take], _I64)
    det = cols.state_records(np.array(slots, _I64))
    trend = book.trends.state_records(np.array(trend_slots, _I64))
    if det is None or trend is None:
        return out
    nd, nt = 1 + det.shape[1], trend.shape[1]
    head = _HEAD.size
    packed = np.empty((len(take), head + nd + nt), np.uint8)
    packed[:, :head] = np.frombuffer(_HEAD.pack(nd, nt), np.uint8)
    packed[:, head] = KAIZEN_STATE[0]
    packed[:, head + 1:head + nd] = det
    packed[:, head + nd:] = trend
    book.since_cp[rows] = 0
    book.cp_at[rows] = now
    data, width = packed.tobytes(), packed.shape[1]
    for k, i in enumerate(take):
        out[i] = data[k * width:(k + 1) * width]
    return out


def _spans(starts: list[int], counts: list[int]) -> np.ndarray:
    """The indices start .. start + count - 1 of each span, span after span."""
    n = np.array(counts, _I64)
    offsets = np.array(starts, _I64) - (np.cumsum(n) - n)
    return np.repeat(offsets, n) + np.arange(int(n.sum()))


def score_groups(cols: DetectorColumns, groups: Sequence[tuple[SeriesModel, Sequence[Mapping[str, Any]]]]
                 ) -> tuple[np.ndarray, dict[int, list[TrendFinding]]]:
    """SeriesModel.observe of each group's points (each group one series, its points in time order): the
    detectors of kaizen-scored series are rows of `cols`, their trend trackers and bookkeeping rows of
    the SeriesColumns beside it (adopted on first sight), all their points scored and tracked in
    columnar calls; series of another River model are scored per point. Returns the points' scores
    (numpy, group after group) and the trend findings of the few points that have some (by the same
    index): no container per point, so the garbage collector is not woken by the batch."""
    book = series_columns_of(cols)
    flat: list[Mapping[str, Any]] = []
    slots: list[int] = []
    counts: list[int] = []
    rows: list[int] = []       # the series' rows of `book`, -1 for a trend of other parameters
    starts: list[int] = []     # each columnar group's first index in the output
    per_point: list[tuple[SeriesModel, Sequence[Mapping[str, Any]], int]] = []   # (model, points, first index)
    others: list[tuple[SeriesModel, Sequence[Mapping[str, Any]], int]] = []      # another River model
    out = 0
    for model, pts in groups:
        if not pts:
            continue
        det = model.detector
        if model._book is not book or type(det) is not ColumnSlot or det.cols is not cols:
            adopted = _adopt(model, cols, book)     # first sight, or not columnar
            if adopted is None:
                others.append((model, pts, out))
                out += len(pts)
                continue
            det = adopted
            if model._book is not book:
                per_point.append((model, pts, len(flat)))
        n = len(pts)
        slots.append(det.slot)
        counts.append(n)
        rows.append(model._row if model._book is book else -1)
        starts.append(out)
        flat += pts
        out += n
    found: dict[int, list[TrendFinding]] = {}
    if not flat:
        scores = np.zeros(out, _F64)
    else:
        book.check_distinct(rows)   # before anything learns the batch
        srows = np.fromiter(slots, _I64, len(slots))
        if len(srows) != len(flat):
            srows = np.repeat(srows, counts)
        ts = np.fromiter(map(_TIMESTAMP, flat), _F64, len(flat))
        values = np.fromiter(map(_VALUE, flat), _F64, len(flat))
        sc, su = cols.score_learn_batch(srows, ts, values)
        dense = not others
        scores = sc if dense else np.zeros(out, _F64)
        if not dense:
            scores[_spans(starts, counts)] = sc
        if not per_point:
            got = book.track(rows, counts, flat, ts, values, sc, su)
        else:     # some trends of other parameters among them: those per point, the rest in columns
            fstarts = (np.cumsum(counts) - counts).tolist()
            mine = [k for k, row in enumerate(rows) if row >= 0]
            got = {}
            if mine:
                mc = [counts[k] for k in mine]
                sub = _spans([fstarts[k] for k in mine], mc)
                part = book.track([rows[k] for k in mine], mc, [flat[i] for i in sub.tolist()], ts[sub],
                                  values[sub], sc[sub], su[sub])
                got = {int(sub[i]): f for i, f in part.items()}
            sl = sc.tolist()
            sul = su.tolist()
            for model, pts, f0 in per_point:
                scored = model.observe_scored
                for m, p in enumerate(pts):
                    i = f0 + m
                    _, findings = scored(p["timestamp"], p["value"], sl[i], sul[i], bool(p.get("history")))
                    if findings:
                        got[i] = findings
        if dense:
            found = got
        else:
            first = np.cumsum(counts) - counts      # each columnar group's first index in `flat`
            for i, f in got.items():
                k = int(np.searchsorted(first, i, side="right")) - 1
                found[starts[k] + i - int(first[k])] = f
    for model, pts, o in others:
        observe = model.observe
        for m, p in enumerate(pts):
            score, findings = observe(p["timestamp"], p["value"], bool(p.get("history")))
            if findings:
                found[o + m] = findings
            scores[o + m] = score
    return scores, found


def observe_groups(cols: DetectorColumns, groups: Sequence[tuple[SeriesModel, Sequence[Mapping[str, Any]]]]
                   ) -> tuple[list[float], dict[int, list[TrendFinding]]]:
    """score_groups with the scores as a list."""
    scores, found = score_groups(cols, groups)
    return scores.tolist(), found


def _severity(score: float) -> str:
    if score >= 0.95:
        return "critical"
    if score >= 0.85:
        return "high"
    if score >= 0.7:
        return "medium"
    return "low"


def anomaly_insight(p: MetricDataPoint, score: float, model: SeriesModel, now: float) -> TelemetryInsight:
    """An anomaly finding of the detector (score ≥ ANOMALY_THRESHOLD)."""
    kind = classify_metric(p.metric_name)
    base, _cur = model.trend.windows()
    baseline = sum(base) / len(base) if base else p.value
    change = (p.value - baseline) / abs(baseline) * 100 if baseline else 0.0
    problem = kind if kind != "other" else "anomaly"
    return TelemetryInsight(
        insight_type="anomaly", severity=_severity(score), affected_component=p.component(),  # type: ignore[arg-type]
        affected_tenants=[p.tenant_id], tenant_id=p.tenant_id, source="scoring", metric_name=p.metric_name,
        problem_type=problem, confidence_score=round(min(1.0, max(0.0, score)), 4),
        metrics={"value": p.value, "baseline": baseline, "anomaly_score": score, "change_pct": change},
        description=f"{p.metric_name} of {p.component()} is anomalous: {p.value:g} vs baseline {baseline:g} "
                    f"(score {score:.2f})",
        recommended_action=f"investigate {kind} of {p.component()}",
        timestamp=datetime.fromtimestamp(p.timestamp.timestamp(), UTC),
        evidence={"series": p.series_key(), "threshold": ANOMALY_THRESHOLD, "detected_at": now,
                  "detector": model.spec,
                  "namespace": p.namespace, "dimensions": p.dimensions},
    )


_RULE_PROBLEM = {"latency_increase": "latency", "error_rate_increase": "error_rate",
                 "high_utilization": "utilization", "throughput_drop": "throughput"}


def trend_insight(p: MetricDataPoint, f: TrendFinding, model: SeriesModel, now: float) -> TelemetryInsight:
    """A performance-degradation finding of the trend rules (docs/formulas.md)."""
    kind = classify_metric(p.metric_name)
    problem = _RULE_PROBLEM.get(f.rule, kind if kind != "other" else "performance")
    return TelemetryInsight(
        insight_type="performance_degradation", severity=f.severity,  # type: ignore[arg-type]
        affected_component=p.component(), affected_tenants=[p.tenant_id], tenant_id=p.tenant_id,
        source="trends", metric_name=p.metric_name, problem_type=problem, confidence_score=0.8,
        metrics={"baseline": f.baseline, "current": f.current, "change_pct": f.change_pct, "value": p.value},
        description=f"{f.rule.replace('_', ' ')}: {p.metric_name} of {p.component()} {f.baseline:g} → "
                    f"{f.current:g} ({f.change_pct:+.1f} %)",
        recommended_action=f"tune {p.component()} to restore {kind}",
        timestamp=datetime.fromtimestamp(p.timestamp.timestamp(), UTC),
        evidence={"series": p.series_key(), "rule": f.rule, "detected_at": now},
    )
