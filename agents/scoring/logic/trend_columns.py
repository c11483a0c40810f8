"""The trend trackers of a partition's columnar series as rows of arrays, observed by one compiled loop.

`TrendColumns.observe_batch(rows, values, surprise)` gives exactly the findings and the state that
`TrendTracker.observe` gives on the same points, series by series in input order. The usual point —
window update, the exact re-summation due once per ring length, the window statistics and the quiet
branch of `trends.decide` — is `trend_kernel.quiet_run` (numba), which visits the points in input order.
It stops at the rare point that is not quiet (a rule holds, an incident is active, the drift fit is due):
`trends.decide`, the tracker's own decision code, runs for it on a scratch TrendTracker loaded with the
row, and the loop goes on from the next point. A point whose re-summation `math.fsum` would not sum as
finite numbers (an overflow: fsum raises there) goes through a TrendTracker built from the row, which
raises where the tracker raises.

`state(slot)` are `TrendTracker.to_state()` bytes and `load(slot, data)` reads them (v3 and v4), so a
checkpoint of either form restores into the other. tests/unit/test_trend_columns.py holds both forms
together on generated series; docs/throughput.md describes the design and its cost.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from agents.scoring.logic import trends as _tr
from agents.scoring.logic.trend_kernel import LOUD, PARTIALS, UNSURE, quiet_run
from agents.scoring.logic.trends import (
    DEFAULT_TREND_PARAMS,
    ErrorUnit,
    MetricKind,
    TrendFinding,
    TrendParams,
    TrendTracker,
    decide,
)

__all__ = ["KINDS", "UNITS", "TrendColumns", "TrendSlot"]

# (trend_kernel.py reads a row's kind and unit by these indexes)
KINDS: tuple[MetricKind, ...] = ("latency", "error_rate", "utilization", "throughput", "other")
UNITS: tuple[ErrorUnit, ...] = ("percent", "ratio", "count")

# the row state: one array per field of TrendTracker, the ring one C-contiguous row per slot
_FLOATS = ("ref", "bsum", "bsq", "csum", "peak")
_INTS = ("filled", "pos", "steps", "active", "held", "calm", "reported", "kind", "unit")

_F64 = np.float64
_I64 = np.int64


@lru_cache(maxsize=8)
def _state_dtype(size: int) -> np.dtype:
    """A record of TrendColumns.state's bytes, field by field (packed, little-endian as struct's "<")."""
    return np.dtype([("version", "u1"), ("filled", "<u4"), ("pos", "<u4"), ("active", "<u8"), ("steps", "<u4"),
                     ("ref", "<f8"), ("bsum", "<f8"), ("bsq", "<f8"), ("csum", "<f8"), ("held", "<u4"),
                     ("calm", "<u4"), ("reported", "u1"), ("peak", "<f8"), ("ring", "<f8", (size,))])


class TrendColumns:
    """Every TrendTracker (one TrendParams) of a partition's columnar series as rows of arrays."""

    ring: np.ndarray
    ref: np.ndarray
    bsum: np.ndarray
    bsq: np.ndarray
    csum: np.ndarray
    peak: np.ndarray
    filled: np.ndarray
    pos: np.ndarray
    steps: np.ndarray
    active: np.ndarray
    held: np.ndarray
    calm: np.ndarray
    reported: np.ndarray
    kind: np.ndarray
    unit: np.ndarray

    def __init__(self, params: TrendParams | None = None, capacity: int = 64) -> None:
        p = self.p = params or DEFAULT_TREND_PARAMS
        if p.min_baseline < 1 or p.current_size < 1:
            raise ValueError("the columns need min_baseline >= 1 and current_size >= 1")
        self.size = p.baseline_size + p.current_size
        cap = max(int(capacity), 1)
        self._cap = cap
        self._used = 0
        self._free: list[int] = []
        self.ring = np.zeros((cap, self.size), _F64)
        for name in _FLOATS:
            setattr(self, name, np.zeros(cap, _F64))
        for name in _INTS:
            setattr(self, name, np.zeros(cap, _I64))
        self._scratch = TrendTracker("other", p)  # decide()'s tracker, loaded with one row at a time
        # the loop's parameters, typed as its compiled form takes them (an int given for a float field would
        # make numba compile another form at run time)
        self._params = ((int(p.current_size), int(p.min_baseline), int(p.clear)),
                        (float(p.std_k), float(p.latency_increase), float(p.error_increase),
                         float(p.utilization_max), float(p.throughput_drop)))
        self._stats = np.zeros(3, _F64)            # the loop's answer for a loud point: bm, bs, cm
        self._diffs = np.zeros(2 * self.size, _F64)  # the loop's re-summation scratch
        self._partials = np.zeros(PARTIALS, _F64)

    # --- slots -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._used - len(self._free)

    def nbytes(self) -> int:
        return sum(getattr(self, n).nbytes for n in ("ring", *_FLOATS, *_INTS))

    def _grow(self, cap: int) -> None:
        for name in ("ring", *_FLOATS, *_INTS):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._cap = cap

    def _alloc(self) -> int:
        if self._free:
            return self._free.pop()
        if self._used == self._cap:
            self._grow(self._cap + max(self._cap // 2, 16))   # 1.5x: at most a third of the rows idle
        self._used += 1
        return self._used - 1

    def new_slot(self, kind: MetricKind = "other", error_unit: ErrorUnit = "percent") -> int:
        """A slot holding a fresh tracker of that metric kind and error unit (all its state zero, as
        TrendTracker.__init__ leaves it)."""
        reused = bool(self._free)
        slot = self._alloc()
        if reused:  # (a row never used is zero: the arrays are allocated zeroed)
            self.ring[slot] = 0.0
            for name in _FLOATS + _INTS:
                getattr(self, name)[slot] = 0
        self.kind[slot], self.unit[slot] = KINDS.index(kind), UNITS.index(error_unit)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def kind_of(self, slot: int) -> MetricKind:
        return KINDS[int(self.kind[slot])]

    def unit_of(self, slot: int) -> ErrorUnit:
        return UNITS[int(self.unit[slot])]

    # --- checkpoints: TrendTracker.to_state() bytes ----------------------------------------------
    def state_records(self, slots: np.ndarray) -> np.ndarray | None:
        """`state(slot)` of many slots at once, as an (n, state size) uint8 array; None when a count is
        beyond what its field holds (`state` raises there: the caller takes the per-slot path)."""
        dt = _state_dtype(self.size)
        out = np.empty(len(slots), dt)
        for name, most in (("filled", 0xFFFFFFFF), ("pos", 0xFFFFFFFF), ("steps", 0xFFFFFFFF), ("held", 0xFFFFFFFF),
                           ("calm", 0xFFFFFFFF), ("reported", 0xFF), ("active", None)):
            got = getattr(self, name).take(slots)
            if got.size and (int(got.min()) < 0 or (most is not None and int(got.max()) > most)):
                return None
            out[name] = got
        out["version"] = 4
        for name in ("ref", "bsum", "bsq", "csum", "peak", "ring"):
            out[name] = getattr(self, name).take(slots, axis=0)
        return out.view(np.uint8).reshape(len(slots), dt.itemsize)

    def state(self, slot: int) -> bytes:
        """The slot's tracker as `TrendTracker.to_state()` would write it."""
        return (_tr._STATE.pack(4, int(self.filled[slot]), int(self.pos[slot]), int(self.active[slot]),
                                int(self.steps[slot]), float(self.ref[slot]), float(self.bsum[slot]),
                                float(self.bsq[slot]), float(self.csum[slot]), int(self.held[slot]),
                                int(self.calm[slot]), int(self.reported[slot]))
                + _tr._PEAK.pack(float(self.peak[slot])) + self.ring[slot].tobytes())

    def load(self, slot: int, data: bytes) -> None:
        """Set the slot (keeping its kind and unit) from `TrendTracker.to_state()` bytes (ValueError as
        from_state would raise)."""
        self.store(slot, TrendTracker.from_state(data, self.kind_of(slot), self.p, self.unit_of(slot)))

    def tracker(self, slot: int) -> TrendTracker:
        """The slot as a TrendTracker (same state)."""
        t = TrendTracker(self.kind_of(slot), self.p, self.unit_of(slot))
        t._filled, t._pos, t._steps = int(self.filled[slot]), int(self.pos[slot]), int(self.steps[slot])
        t._active, t._held, t._calm = int(self.active[slot]), int(self.held[slot]), int(self.calm[slot])
        t._reported = bool(self.reported[slot])
        t._ref, t._bsum, t._bsq = float(self.ref[slot]), float(self.bsum[slot]), float(self.bsq[slot])
        t._csum, t._peak = float(self.csum[slot]), float(self.peak[slot])
        t._ring = array("d", self.ring[slot].tobytes())
        return t

    def store(self, slot: int, t: TrendTracker) -> None:
        """Write a TrendTracker (of these parameters) into the slot, its kind and unit included. A state no
        tracker reaches from a fresh one (fill or position out of the ring: a corrupt checkpoint) is
        refused (ValueError): the rounds rely on them."""
        if t.p is not self.p and t.p != self.p:
            raise ValueError("the tracker's parameters are not the columns' parameters")
        if not (0 <= t._filled <= self.size and 0 <= t._pos < self.size and t._steps >= 0):
            raise ValueError("the tracker's ring position or fill is out of its ring")
        self.filled[slot], self.pos[slot], self.steps[slot] = t._filled, t._pos, t._steps
        self.active[slot], self.held[slot], self.calm[slot] = t._active, t._held, t._calm
        self.reported[slot] = int(t._reported)
        self.kind[slot], self.unit[slot] = KINDS.index(t.kind), UNITS.index(t.error_unit)
        self.ref[slot], self.bsum[slot], self.bsq[slot] = t._ref, t._bsum, t._bsq
        self.csum[slot], self.peak[slot] = t._csum, t._peak
        self.ring[slot] = np.frombuffer(t._ring, _F64)

    def windows(self, slot: int) -> tuple[list[float], list[float]]:
        """TrendTracker.windows() of the slot."""
        filled, pos = int(self.filled[slot]), int(self.pos[slot])
        ordered = self.ring[slot, (pos - filled + np.arange(filled)) % self.size].tolist()
        cur_n = min(self.p.current_size, len(ordered))
        return ordered[: len(ordered) - cur_n], ordered[len(ordered) - cur_n:]

    # --- observing -------------------------------------------------------------------------------
    def observe_batch(self, rows: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float],
                      surprise: np.ndarray | Sequence[float]) -> dict[int, list[TrendFinding]]:
        """TrendTracker.observe of each point, the points of each row in input order; returns the
        findings of the few points that have some, by input index."""
        r = np.ascontiguousarray(rows, _I64)
        x = np.ascontiguousarray(values, _F64)
        su = np.ascontiguousarray(surprise, _F64)
        found: dict[int, list[TrendFinding]] = {}
        n = len(r)
        if n == 0:
            return found
        if len(x) != n or len(su) != n:
            raise ValueError("rows, values and surprise differ in length")
        if int(r.min()) < 0 or int(r.max()) >= self._used:   # (the loop does not check its indexes)
            raise IndexError("a row is not a slot of these columns")
        ints, floats = self._params
        i = 0
        while i < n:
            code, i = quiet_run(r, x, i, self.ring, self.ref, self.bsum, self.bsq, self.csum, self.filled, self.pos,
                                self.steps, self.active, self.calm, self.reported, self.kind, self.unit, *ints,
                                *floats, self._stats, self._diffs, self._partials)
            if code == LOUD:
                self._decide(int(r[i]), float(su[i]), i, found)
            elif code == UNSURE:
                self._observe_one(int(r[i]), float(x[i]), float(su[i]), i, found)
            else:
                break
            i += 1
        return found

    def _decide(self, slot: int, surprise: float, i: int, found: dict[int, list[TrendFinding]]) -> None:
        """decide() of a point the loop stopped at (its window update done, its statistics in _stats), on
        the scratch tracker loaded with the row; what it decided is written back."""
        t = self._scratch
        t.kind, t.error_unit = KINDS[int(self.kind[slot])], UNITS[int(self.unit[slot])]
        t._ring = array("d", self.ring[slot].tobytes())
        t._pos, t._filled = int(self.pos[slot]), int(self.filled[slot])
        t._active, t._held, t._calm = int(self.active[slot]), int(self.held[slot]), int(self.calm[slot])
        t._reported, t._peak = bool(self.reported[slot]), float(self.peak[slot])
        bm, bs, cm = self._stats.tolist()
        got = decide(t, bm, bs, cm, surprise)
        self.active[slot], self.held[slot], self.calm[slot] = t._active, t._held, t._calm
        self.reported[slot], self.peak[slot] = int(t._reported), t._peak
        if got:
            found[i] = got

    def _observe_one(self, slot: int, value: float, surprise: float, i: int,
                     found: dict[int, list[TrendFinding]]) -> None:
        """A point the loop would not sum as fsum does, through a TrendTracker built from the row: it
        raises where the tracker raises, and what it did before that stays, as in the tracker."""
        t = self.tracker(slot)
        try:
            got = t.observe(0.0, value, surprise)
        finally:
            self.store(slot, t)
        if got:
            found[i] = got

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("TrendColumns is checkpointed per slot (state(slot)), not pickled")


class TrendSlot:
    """One series' trend tracker held as a slot of a TrendColumns: what a SeriesModel asks of its trend
    (kind and unit, windows, checkpoint bytes, and a one-point observe for callers outside the batch)."""

    __slots__ = ("cols", "slot")

    def __init__(self, cols: TrendColumns, slot: int) -> None:
        self.cols = cols
        self.slot = slot

    @property
    def kind(self) -> MetricKind:
        return self.cols.kind_of(self.slot)

    @property
    def error_unit(self) -> ErrorUnit:
        return self.cols.unit_of(self.slot)

    @property
    def p(self) -> TrendParams:
        return self.cols.p

    def windows(self) -> tuple[list[float], list[float]]:
        return self.cols.windows(self.slot)

    def observe(self, timestamp: float, value: float, surprise: float = 1.0) -> list[TrendFinding]:
        t = self.cols.tracker(self.slot)
        try:
            return t.observe(timestamp, value, surprise)
        finally:
            self.cols.store(self.slot, t)

    def to_state(self) -> bytes:
        return self.cols.state(self.slot)

    @classmethod
    def adopt(cls, cols: TrendColumns, t: TrendTracker) -> TrendSlot:
        """A slot holding `t`'s state."""
        if t.p is not cols.p and t.p != cols.p:
            raise ValueError("the tracker's parameters are not the columns' parameters")
        slot = cols._alloc()
        try:
            cols.store(slot, t)
        except ValueError:
            cols.release(slot)
            raise
        return cls(cols, slot)
