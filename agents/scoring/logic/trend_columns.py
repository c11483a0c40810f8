"""The trend trackers of a partition's columnar series as rows of arrays, updated one numpy step per round
(the k-th point of each series in round k; the detector beside them is one compiled loop, detector_kernel.py).

`TrendColumns.observe_batch(rows, values, surprise)` gives exactly the findings and the state that
`TrendTracker.observe` gives on the same points, series by series in input order. Per round, for all its
rows at once: the ring write, the incremental window sums (every +, -, * the same IEEE float64 operation
in the same order as the tracker's, with numpy's where-selection for the tracker's ifs, never an added
0.0 that would turn -0.0 into 0.0), the window statistics (mean, std with the tracker's max(q, 0.0) and
sqrt, recent mean), `any_rule_holds` for each row's metric kind and error unit, and the latency drift
rule's pre-condition. The usual quiet point (no incident active, no rule holds, no drift due) is then
one numpy step too (calm counter, re-arming). Only the rare rows that are not quiet go through
`trends.decide`, the tracker's own decision code, on a scratch TrendTracker loaded with the row; the
exact re-summation due every ring length (`math.fsum`, exceptions included) runs per row in Python on
differences formed in numpy, in the tracker's time order.

`state(slot)` are `TrendTracker.to_state()` bytes and `load(slot, data)` reads them (v3 and v4), so a
checkpoint of either form restores into the other. tests/unit/test_trend_columns.py holds both forms
together on generated series; docs/throughput.md describes the design and its cost.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.scoring.logic import trends as _tr
from agents.scoring.logic.trends import (
    DEFAULT_TREND_PARAMS,
    ErrorUnit,
    MetricKind,
    TrendFinding,
    TrendParams,
    TrendTracker,
    decide,
)

__all__ = ["MIN_ROUND", "TrendColumns", "TrendSlot", "rules_hold"]

# A round with fewer rows than this costs more in numpy calls than TrendTracker.observe per point: the
# rows still holding points past it go through a TrendTracker built from the row (and written back).
MIN_ROUND = 16

KINDS: tuple[MetricKind, ...] = ("latency", "error_rate", "utilization", "throughput", "other")
UNITS: tuple[ErrorUnit, ...] = ("percent", "ratio", "count")
_LAT, _ERR, _UTIL, _THR, _OTHER = range(5)
_PCT, _RATIO, _COUNT = range(3)

# the row state: one array per field of TrendTracker (1-D arrays: a round gathers and scatters each with
# take / fancy assignment, ~1 µs per 1,000 rows, where rows of a 2-D array cost ~10 µs)
_FLOATS = ("ref", "bsum", "bsq", "csum", "peak")
_INTS = ("filled", "pos", "steps", "active", "held", "calm", "reported", "kind", "unit")

_F64 = np.float64
_I64 = np.int64


def rules_hold(bm: np.ndarray, bs: np.ndarray, cm: np.ndarray, kind: np.ndarray, unit: np.ndarray,
               p: TrendParams) -> np.ndarray:
    """`any_rule_holds` of each row (`kind`, `unit`: indexes into KINDS, UNITS), each branch the same
    float operations as there, selected by the row's kind (NaN compares false in both)."""
    with np.errstate(all="ignore"):
        return _gate(bm, bs, cm, kind, unit, p, None)


def _gate(bm: np.ndarray, bs: np.ndarray, cm: np.ndarray, kind: np.ndarray, unit: np.ndarray, p: TrendParams,
          full: np.ndarray | None) -> np.ndarray:
    """rules_hold, or'ed (`full`: the rows whose ring is full) with decide()'s drift pre-condition of the
    latency rows. A kind absent from the rows costs nothing; a kind alone in them needs no mask."""
    n = len(kind)
    present = np.bincount(kind, minlength=len(KINDS)).tolist()
    sdk = p.std_k * bs
    # the 2-sigma rule: throughput degrades downwards, every other kind upwards
    thr = present[_THR]
    if thr == 0:
        out = cm > bm + sdk
    elif thr == n:
        out = cm < bm - sdk
    else:
        out = np.where(kind == _THR, cm < bm - sdk, cm > bm + sdk)
    out &= bs > 0.0
    if thr or present[_LAT] or present[_ERR]:
        bmp = bm > 0.0
        d = cm - bm
        rel = d / bm
    if thr:
        hit = bmp & ((bm - cm) / bm > p.throughput_drop)
        out |= hit if thr == n else hit & (kind == _THR)
    if present[_LAT]:
        hit = bmp & (rel > p.latency_increase)
        if full is not None:
            hit |= bmp & (d > bm * p.latency_increase / 4) & full
        out |= hit if present[_LAT] == n else hit & (kind == _LAT)
    if present[_UTIL]:
        hit = cm > p.utilization_max
        out |= hit if present[_UTIL] == n else hit & (kind == _UTIL)
    if present[_ERR]:
        limit = p.error_increase / 100.0
        count = np.where(bmp, rel > limit, np.where(cm > 0.0, math.inf > limit, 0.0 > limit))
        points = np.where(unit == _RATIO, d * 100.0, d) > p.error_increase
        hit = np.where(unit == _COUNT, count, points)
        out |= hit if present[_ERR] == n else hit & (kind == _ERR)
    return out


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
        self.min_round = MIN_ROUND
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
        self._mark = np.zeros(cap, _I64)          # scratch: finds a batch's repeated rows
        self._scratch = TrendTracker("other", p)  # decide()'s tracker, loaded with one row at a time

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
        slot = self._alloc()
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
        r = np.asarray(rows, _I64)
        x = np.asarray(values, _F64)
        su = np.asarray(surprise, _F64)
        total = len(r)
        found: dict[int, list[TrendFinding]] = {}
        if total == 0:
            return found
        mark = self._mark
        if len(mark) < self._cap:
            mark = self._mark = np.zeros(self._cap, _I64)
        seq = np.arange(total)
        mark[r] = seq
        if (mark[r] == seq).all():                   # one point per row: a single round
            by_round = seq
            counts = [total]
        else:
            order = np.argsort(r, kind="stable")      # by row, then input order
            rr = r[order]
            first = np.ones(total, bool)
            first[1:] = rr[1:] != rr[:-1]
            rank = seq - np.maximum.accumulate(np.where(first, seq, 0))
            counts = np.bincount(rank).tolist()
            by_round = order[np.argsort(rank, kind="stable")]
        start = 0
        with np.errstate(all="ignore"):   # the tracker's float arithmetic: inf and NaN, no warnings
            if len(counts) == 1 and total >= self.min_round:
                self._round(r, x, su, by_round, found)
                start = total
            for c in counts if start < total else ():
                if c < self.min_round:
                    break
                sel = by_round[start:start + c]
                start += c
                self._round(r[sel], x[sel], su[sel], sel, found)
        if start < total:
            self._per_point(by_round[start:], r, x, su, found)
        return found

    def _per_point(self, rest: np.ndarray, r: np.ndarray, x: np.ndarray, su: np.ndarray,
                   found: dict[int, list[TrendFinding]]) -> None:
        """The points of the thin rounds, per row through a TrendTracker (in round order, which is each
        row's input order)."""
        groups: dict[int, list[int]] = {}
        for i in rest.tolist():
            groups.setdefault(int(r[i]), []).append(i)
        xs = x.tolist()
        sus = su.tolist()
        for slot, idx in groups.items():
            t = self.tracker(slot)
            try:
                for i in idx:
                    f = t.observe(0.0, xs[i], sus[i])
                    if f:
                        found[i] = f
            finally:   # what the tracker did before it raised stays, as it does in the tracker
                self.store(slot, t)

    def _round(self, r: np.ndarray, x: np.ndarray, su: np.ndarray, idx: np.ndarray,
               found: dict[int, list[TrendFinding]]) -> None:
        """One point of each of the (distinct) rows `r`: TrendTracker.observe in columns. What raises
        (an overflowing fsum, the drift fit's power) raises where it does in the tracker: the rows'
        window updates and what was decided before it are kept, as the tracker keeps them (it goes on
        from there and recovers once the huge values left its ring)."""
        ok = np.isfinite(x)
        if not ok.all():                         # NaN / inf: TrendTracker.observe ignores the point
            keep = np.flatnonzero(ok)
            if keep.size:
                self._round(r[keep], x[keep], su[keep], idx[keep], found)
            return
        p = self.p
        size = self.size
        cs = p.current_size
        filled = self.filled.take(r)
        pos = self.pos.take(r)
        ref = self.ref.take(r)
        bsum = self.bsum.take(r)
        bsq = self.bsq.take(r)
        csum = self.csum.take(r)
        steps = self.steps.take(r) + 1
        flat = self.ring.reshape(-1)   # a view: the ring is always one C-contiguous block
        at = r * size
        lo = int(filled.min())
        if lo == size:                       # the usual round: every ring full
            old = flat.take(at + pos) - ref              # the oldest value leaves the baseline
            bsum = bsum - old
            bsq = bsq - old * old
            mv = flat.take(at + (pos - cs) % size) - ref   # the oldest recent one moves into it
            csum = csum - mv
            bsum = bsum + mv
            bsq = bsq + mv * mv
            nfilled = filled
        else:
            if lo == 0:
                ref = np.where(filled == 0, x, ref)
            full = filled == size
            old = flat.take(at + pos) - ref
            bsum = np.where(full, bsum - old, bsum)
            bsq = np.where(full, bsq - old * old, bsq)
            moves = filled >= cs
            mv = flat.take(at + (pos - cs) % size) - ref
            csum = np.where(moves, csum - mv, csum)
            bsum = np.where(moves, bsum + mv, bsum)
            bsq = np.where(moves, bsq + mv * mv, bsq)
            nfilled = np.minimum(filled + 1, size)
        csum = csum + (x - ref)
        npos = pos + 1
        npos[npos == size] = 0
        try:
            due = np.flatnonzero(steps >= size)
            if due.size:
                self._resum(r, x, pos, nfilled, npos, ref, due, bsum, bsq, csum, steps)
            nb = nfilled - cs
            live = np.flatnonzero(nb >= p.min_baseline) if lo - cs < p.min_baseline else None
            if live is None or live.size:
                self._decide(r, x, su, idx, pos, nfilled, ref, bsum, bsq, csum, nb, live, found)
        finally:
            flat[at + pos] = x
            self.pos[r] = npos
            self.steps[r] = steps
            self.bsum[r] = bsum
            self.bsq[r] = bsq
            self.csum[r] = csum
            if lo != size:
                self.filled[r] = nfilled
                if lo == 0:
                    self.ref[r] = ref

    def _resum(self, r: np.ndarray, x: np.ndarray, pos: np.ndarray, nfilled: np.ndarray, npos: np.ndarray,
               ref: np.ndarray, due: np.ndarray, bsum: np.ndarray, bsq: np.ndarray, csum: np.ndarray,
               steps: np.ndarray) -> None:
        """TrendTracker._resum of the rows `due` (into the round's arrays): the differences to the
        reference in numpy (the same IEEE subtraction), put in time order, squared and fsummed per row as
        the tracker does, assigned in its order (a raising fsum leaves what it leaves there)."""
        size = self.size
        rings = self.ring.take(r[due], 0)
        rings[np.arange(due.size), pos[due]] = x[due]        # the ring as it is after this point
        diffs = (rings - ref[due][:, None]).tolist()
        cs = self.p.current_size
        fsum = math.fsum
        mul = operator.mul
        for j, d, n, at in zip(due.tolist(), diffs, nfilled[due].tolist(), npos[due].tolist(), strict=True):
            if n == size:
                d = d[at:] + d[:at]
            else:   # a ring not full yet (only after an unusual restore): its values in time order
                d = [d[(at - n + i) % size] for i in range(n)]
            nb = n - min(cs, n)
            base = d[:nb]
            bsum[j] = fsum(base)
            bsq[j] = fsum(map(mul, base, base))
            csum[j] = fsum(d[nb:])
            steps[j] = 0

    def _decide(self, r: np.ndarray, x: np.ndarray, su: np.ndarray, idx: np.ndarray, pos: np.ndarray,
                nfilled: np.ndarray, ref: np.ndarray, bsum: np.ndarray, bsq: np.ndarray, csum: np.ndarray,
                nb: np.ndarray, live: np.ndarray | None, found: dict[int, list[TrendFinding]]) -> None:
        """The rows past the minimum baseline (`live`; None: all): window statistics, the quiet point's
        bookkeeping in numpy, decide() per row that is not the usual quiet point."""
        p = self.p
        if live is not None:
            r, x, su, idx, pos, nfilled = r[live], x[live], su[live], idx[live], pos[live], nfilled[live]
            ref, bsum, bsq, csum, nb = ref[live], bsum[live], bsq[live], csum[live], nb[live]
        bmean = bsum / nb
        bm = ref + bmean
        q = bsq / nb - bmean * bmean
        bs = np.sqrt(np.where(0.0 > q, 0.0, q))   # max(q, 0.0): q unless 0.0 > q (NaN stays NaN)
        cm = ref + csum / p.current_size
        # decide()'s gate: some rule holding, the drift rule due (latency, full ring, recent mean a quarter
        # of latency_increase above the baseline), or an incident active
        gate = _gate(bm, bs, cm, self.kind.take(r), self.unit.take(r), p, nfilled == self.size)
        gate |= self.active.take(r) != 0
        loud = np.flatnonzero(gate)
        if len(loud) < len(r):                   # the usual quiet point: calm counts, re-arms at `clear`
            rq = r if not len(loud) else r[~gate]
            calm = self.calm.take(rq) + 1
            self.calm[rq] = calm
            self.reported[rq[calm >= p.clear]] = 0
        if len(loud):
            self._loud(r[loud], x[loud], su[loud], idx[loud], pos[loud], nfilled[loud], bm[loud], bs[loud],
                       cm[loud], found)

    def _loud(self, r: np.ndarray, x: np.ndarray, su: np.ndarray, idx: np.ndarray, pos: np.ndarray,
              nfilled: np.ndarray, bm: np.ndarray, bs: np.ndarray, cm: np.ndarray,
              found: dict[int, list[TrendFinding]]) -> None:
        """decide() of each row, on the scratch tracker loaded with it (its ring as it is after this point,
        fill, position and incident fields); what it decided is written back, up to a row that raises."""
        t = self._scratch
        slots = r.tolist()
        rows = zip(slots, x.tolist(), pos.tolist(), (pos + 1).tolist(), nfilled.tolist(),
                   self.active.take(r).tolist(), self.held.take(r).tolist(), self.calm.take(r).tolist(),
                   self.reported.take(r).tolist(), self.kind.take(r).tolist(), self.unit.take(r).tolist(),
                   self.peak.take(r).tolist(), bm.tolist(), bs.tolist(), cm.tolist(), su.tolist(), idx.tolist(),
                   strict=True)
        size = self.size
        ring = self.ring
        out: list[tuple[int, int, int, int, float]] = []
        try:
            for (slot, value, at, npos, filled, t._active, t._held, t._calm, reported, kind, unit, t._peak,
                 b_m, b_s, c_m, s, i) in rows:
                t._reported = bool(reported)
                t.kind, t.error_unit = KINDS[kind], UNITS[unit]
                t._ring = array("d", ring[slot].tobytes())
                t._ring[at] = value
                t._pos, t._filled = npos if npos < size else 0, filled
                got = decide(t, b_m, b_s, c_m, s)
                out.append((t._active, t._held, t._calm, int(t._reported), t._peak))
                if got:
                    found[i] = got
        finally:
            if out:
                done = slots[: len(out)]
                active, held, calm, reported, peak = zip(*out, strict=True)
                self.active[done] = active
                self.held[done] = held
                self.calm[done] = calm
                self.reported[done] = reported
                self.peak[done] = peak

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
