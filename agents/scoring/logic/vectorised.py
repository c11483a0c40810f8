"""kaizen's default detector in columns: the state of every series of a partition in numpy arrays indexed
by series slot, a batch of points scored by one compiled loop (detector_kernel.py).

`DetectorColumns.score_batch(slots, ts, values)` gives exactly the scores (bit for bit) and the state that
`KaizenDetector.score_learn` gives on the same points, series by series in time order: the loop is the
detector's own scalar code written against these arrays (detector_kernel.py says how it stays equal).
`state(slot)` are `KaizenDetector.to_state()` bytes and `load(slot, data)` reads them, so checkpoints,
the changelog and `kaizen score` are unchanged. tests/unit/test_vectorised_detector.py checks it all on
generated series; docs/throughput.md describes the design and its cost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from agents.scoring.logic import detectors as _det
from agents.scoring.logic.detector_parts import Likelihood, RecentMax
from agents.scoring.logic.detectors import DEFAULT_PARAMS, DetectorParams, KaizenDetector

__all__ = ["ColumnSlot", "DetectorColumns"]

_HUGE = 1e100
_kernel: Callable[..., int] | None = None


def _score_learn_rows() -> Callable[..., int]:
    """The compiled loop, imported on first use: numba and its LLVM (≈ 150 MB resident) are loaded by the
    processes that score in columns (the worker), not by every process importing the scoring models."""
    global _kernel
    if _kernel is None:
        from agents.scoring.logic import detector_kernel
        _kernel = cast(Callable[..., int], detector_kernel.score_learn_rows)
    return _kernel


_F64 = np.float64
_I64 = np.int64


class _LikelihoodColumns:
    """`Likelihood` (detector_parts.py) of every series: ring, position, count, EW mean and variance."""

    __slots__ = ("ring", "pos", "n", "mean", "var", "size", "alpha", "quiet", "two_sided", "min_var", "decades")

    def __init__(self, cap: int, template: Likelihood) -> None:
        self.size = template.size
        self.alpha = template.alpha
        self.quiet = template.quiet
        self.two_sided = template.two_sided
        self.min_var = template.min_var
        self.decades = template.decades
        self.ring = np.zeros((cap, self.size), _F64)
        self.pos = np.zeros(cap, _I64)
        self.n = np.zeros(cap, _I64)
        self.mean = np.zeros(cap, _F64)
        self.var = np.zeros(cap, _F64)

    def grow(self, cap: int) -> None:
        for name in ("ring", "pos", "n", "mean", "var"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def reset(self, slot: int) -> None:
        self.ring[slot] = 0.0
        self.pos[slot] = self.n[slot] = 0
        self.mean[slot] = self.var[slot] = 0.0

    def pack(self, slot: int) -> bytes:
        return Likelihood._HEAD.pack(int(self.pos[slot]), int(self.n[slot]), float(self.mean[slot]),
                                     float(self.var[slot])) + self.ring[slot].tobytes()

    def unpack(self, slot: int, data: bytes, off: int) -> int:
        pos, n, mean, var = Likelihood._HEAD.unpack_from(data, off)
        off += Likelihood._HEAD.size
        end = off + 8 * self.size
        if end > len(data):
            raise ValueError("truncated likelihood state")
        self.pos[slot], self.n[slot], self.mean[slot], self.var[slot] = pos, n, mean, var
        self.ring[slot] = np.frombuffer(data, _F64, self.size, off)
        return end


class DetectorColumns:
    """Every KaizenDetector of a partition as rows of arrays (one slot per series, ≈ 1.9 KB each)."""

    def __init__(self, params: DetectorParams | None = None, capacity: int = 64) -> None:
        p = self.params = params or DEFAULT_PARAMS
        cap = max(int(capacity), 1)
        self._cap = cap
        self._used = 0
        self._free: list[int] = []
        proto = KaizenDetector(p)
        self._fp = _det._fingerprint(p)
        self._mask = proto._levels.mask
        self._tbits = (1 << (7 + p.table_bits))  # (key * hash) >> 7 & mask only sees key mod this
        self._table = len(proto._levels.table)
        self._bins = len(proto._prof)
        self._rest = len(proto._cal.recent.ring)
        self._state_size = len(proto.to_state())
        self._records_dtype: np.dtype | None = None  # state_records' record, built on first use
        self.n = np.zeros(cap, _I64)
        self.vmin = np.full(cap, np.inf)
        self.vmax = np.full(cap, -np.inf)
        self.origin = np.zeros(cap, _F64)
        self.width = np.zeros(cap, _F64)
        self.last_ts = np.full(cap, -np.inf)    # the last point's timestamp (the profile's rate per visit)
        self.first_ts = np.zeros(cap, _F64)     # the first point's timestamp (the profile's age)
        self.levels = np.zeros((cap, self._table), np.uint16)
        self.lev = _LikelihoodColumns(cap, proto._lev)
        self.val = _LikelihoodColumns(cap, proto._val)
        self.sea = _LikelihoodColumns(cap, proto._sea)
        self.prof = np.zeros((cap, self._bins), _F64)
        self.visits = np.zeros((cap, self._bins), np.uint16)
        self.cal_ring = np.zeros((cap, self._rest), np.float32)
        self.cal_pos = np.zeros(cap, _I64)
        self.cal_top = np.zeros(cap, _F64)
        self.cal_age = np.zeros(cap, _I64)
        self.surprise = np.zeros(cap, _F64)   # each series' last point's likelihood (KaizenDetector.surprise)
        lev, val, sea = self.lev, self.val, self.sea
        # the kernel's parameters (detector_kernel.score_learn_rows says which is which)
        self._ints = np.array([p.warmup, p.grid_at, p.bins, p.season_min, p.season_bins, p.season_days, lev.quiet,
                               val.quiet, sea.quiet, self._tbits, self._mask, lev.two_sided, val.two_sided,
                               sea.two_sided], _I64)
        self._floats = np.array([p.level_weight, p.adjacent, p.val_weight, p.season_weight, p.season_alpha,
                                 p.season_after, lev.alpha, val.alpha, sea.alpha, lev.min_var, val.min_var,
                                 sea.min_var, lev.decades, val.decades, sea.decades], _F64)

    _ROW_ARRAYS = ("n", "vmin", "vmax", "origin", "width", "last_ts", "first_ts", "levels", "prof", "visits", "cal_ring",
                   "cal_pos", "cal_top", "cal_age", "surprise")

    # --- slots -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._used - len(self._free)

    def nbytes(self) -> int:
        """Bytes of the arrays (allocated capacity)."""
        total = sum(getattr(self, a).nbytes for a in self._ROW_ARRAYS)
        for lik in (self.lev, self.val, self.sea):
            total += lik.ring.nbytes + lik.pos.nbytes + lik.n.nbytes + lik.mean.nbytes + lik.var.nbytes
        return total

    def _grow(self, cap: int) -> None:
        for name in self._ROW_ARRAYS:
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.vmin[self._cap:] = np.inf
        self.vmax[self._cap:] = -np.inf
        self.last_ts[self._cap:] = -np.inf
        for lik in (self.lev, self.val, self.sea):
            lik.grow(cap)
        self._cap = cap

    def new_slot(self) -> int:
        """A slot holding a fresh detector."""
        if self._free:
            slot = self._free.pop()
            self._reset(slot)
            return slot
        if self._used == self._cap:
            self._grow(self._cap + max(self._cap // 2, 16))   # 1.5x: at most a third of the rows idle
        slot = self._used
        self._used += 1
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def _reset(self, slot: int) -> None:
        self.n[slot] = 0
        self.vmin[slot], self.vmax[slot] = np.inf, -np.inf
        self.origin[slot] = self.width[slot] = 0.0
        self.last_ts[slot] = -np.inf
        self.first_ts[slot] = 0.0
        self.levels[slot] = 0
        for lik in (self.lev, self.val, self.sea):
            lik.reset(slot)
        self.prof[slot] = 0.0
        self.visits[slot] = 0
        self.cal_ring[slot] = 0.0
        self.cal_pos[slot] = self.cal_age[slot] = 0
        self.cal_top[slot] = self.surprise[slot] = 0.0

    # --- checkpoints: KaizenDetector.to_state() bytes ----------------------------------------------
    def _state_dtype(self) -> np.dtype:
        """A record of `state`'s bytes, field by field (packed, little-endian as struct's "<")."""
        fields: list[tuple[Any, ...]] = [
            ("version", "u1"), ("fp", "S8"), ("n", "<u4"), ("vmin", "<f8"), ("vmax", "<f8"), ("origin", "<f8"),
            ("width", "<f8"), ("last_ts", "<f8"), ("first_ts", "<f8"), ("levels", "<u2", (self._table,))]
        for name, lik in (("lev", self.lev), ("val", self.val), ("sea", self.sea)):
            fields += [(f"{name}_pos", "<u4"), (f"{name}_n", "<u4"), (f"{name}_mean", "<f8"), (f"{name}_var", "<f8"),
                       (f"{name}_ring", "<f8", (lik.size,))]
        fields += [("cal_pos", "<u4"), ("cal_top", "<f8"), ("cal_age", "<u4"), ("cal_ring", "<f4", (self._rest,)),
                   ("prof", "<f8", (self._bins,)), ("visits", "<u2", (self._bins,))]
        return np.dtype(fields)

    def state_records(self, slots: np.ndarray) -> np.ndarray | None:
        """`state(slot)` of many slots at once, as an (n, state size) uint8 array (one gather per field
        instead of a dozen scalar reads per slot: ≈ 0.2 ms, then ≈ 0.6 µs a slot against ≈ 15 µs a slot
        here); None when a count is beyond the 32 bits the format gives it (`state` raises there: the
        caller takes the per-slot path)."""
        dt = self._records_dtype
        if dt is None:
            dt = self._records_dtype = self._state_dtype()
        out = np.empty(len(slots), dt)
        counts = [self.n, self.lev.pos, self.lev.n, self.val.pos, self.val.n, self.sea.pos, self.sea.n, self.cal_pos,
                  self.cal_age]
        for col in counts:
            got = col.take(slots)
            if got.size and (int(got.min()) < 0 or int(got.max()) > 0xFFFFFFFF):
                return None
        out["version"] = _det._VERSION
        out["fp"] = self._fp
        for name in ("n", "vmin", "vmax", "origin", "width", "last_ts", "first_ts", "levels", "cal_pos", "cal_top",
                     "cal_age", "cal_ring", "prof", "visits"):
            out[name] = getattr(self, name).take(slots, axis=0)
        for name, lik in (("lev", self.lev), ("val", self.val), ("sea", self.sea)):
            for part in ("pos", "n", "mean", "var", "ring"):
                out[f"{name}_{part}"] = getattr(lik, part).take(slots, axis=0)
        return out.view(np.uint8).reshape(len(slots), dt.itemsize)

    def state(self, slot: int) -> bytes:
        """The slot's detector as `KaizenDetector.to_state()` would write it."""
        head = _det._HEAD.pack(_det._VERSION, self._fp, int(self.n[slot]), float(self.vmin[slot]),
                               float(self.vmax[slot]), float(self.origin[slot]), float(self.width[slot]),
                               float(self.last_ts[slot]), float(self.first_ts[slot]))
        cal = RecentMax._HEAD.pack(int(self.cal_pos[slot]), float(self.cal_top[slot]), int(self.cal_age[slot]))
        return b"".join((head, self.levels[slot].tobytes(), self.lev.pack(slot), self.val.pack(slot),
                         self.sea.pack(slot), cal, self.cal_ring[slot].tobytes(), self.prof[slot].tobytes(),
                         self.visits[slot].tobytes()))

    def load(self, slot: int, data: bytes, surprise: float = 0.0) -> None:
        """Set the slot from `KaizenDetector.to_state()` bytes (ValueError as from_state would raise)."""
        head = _det._HEAD
        if len(data) < head.size:
            raise ValueError("truncated detector checkpoint")
        ver, fp, n, vmin, vmax, origin, width, last_ts, first_ts = head.unpack_from(data, 0)
        if ver != _det._VERSION or fp != self._fp:
            raise ValueError("checkpoint was written by another detector version or other parameters")
        if len(data) != self._state_size:
            raise ValueError("detector checkpoint has the wrong size")
        off = head.size
        self.n[slot], self.vmin[slot], self.vmax[slot], self.origin[slot], self.width[slot] = \
            n, vmin, vmax, origin, width
        self.last_ts[slot] = last_ts
        self.first_ts[slot] = first_ts
        self.levels[slot] = np.frombuffer(data, np.uint16, self._table, off)
        off += 2 * self._table
        for lik in (self.lev, self.val, self.sea):
            off = lik.unpack(slot, data, off)
        pos, top, age = RecentMax._HEAD.unpack_from(data, off)
        off += RecentMax._HEAD.size
        self.cal_pos[slot], self.cal_top[slot], self.cal_age[slot] = pos, top, age
        self.cal_ring[slot] = np.frombuffer(data, np.float32, self._rest, off)
        off += 4 * self._rest
        self.prof[slot] = np.frombuffer(data, _F64, self._bins, off)
        off += 8 * self._bins
        self.visits[slot] = np.frombuffer(data, np.uint16, self._bins, off)
        self.surprise[slot] = surprise

    def add_state(self, data: bytes) -> int:
        """A new slot restored from checkpoint bytes."""
        slot = self.new_slot()
        try:
            self.load(slot, data)
        except ValueError:
            self.release(slot)
            raise
        return slot

    def detector(self, slot: int) -> KaizenDetector:
        """The slot as a KaizenDetector (same state, same `surprise`)."""
        det = KaizenDetector.from_state(self.state(slot), self.params)
        det.surprise = float(self.surprise[slot])
        return det

    def store_detector(self, slot: int, det: KaizenDetector) -> None:
        self.load(slot, det.to_state(), det.surprise)

    # --- scoring ---------------------------------------------------------------------------------
    def score_batch(self, slots: np.ndarray | Sequence[int], ts: np.ndarray | Sequence[float],
                    values: np.ndarray | Sequence[float]) -> np.ndarray:
        """Scores of the points (input order); see score_learn_batch."""
        return self.score_learn_batch(slots, ts, values)[0]

    def score_learn_batch(self, slots: np.ndarray | Sequence[int], ts: np.ndarray | Sequence[float],
                          values: np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Score then learn each point, the points of each slot in time order (ties in input order), as
        KaizenDetector.score_learn would one by one. Returns (scores, surprise after each point), in the
        input order."""
        s = np.asarray(slots, _I64)
        t = np.asarray(ts, _F64)
        x = np.asarray(values, _F64)
        total = len(s)
        scores = np.zeros(total, _F64)
        surprise = np.zeros(total, _F64)
        if total == 0:
            return scores, surprise
        if not np.isfinite(t).all() and not np.isfinite(t[(x > -_HUGE) & (x < _HUGE)]).all():
            # a learnt point's time-of-day slot: int(nan) raises in KaizenDetector; here before any change
            raise ValueError("cannot convert float NaN to integer")
        order = np.lexsort((t, s))                   # by slot, then time; ties in input order
        done = _score_learn_rows()(order, s, t, x, scores, surprise, *self._kernel_arrays(), self._ints,
                                   self._floats, sys.version_info >= (3, 12))
        if done < 0:   # OVERFLOW: as math.floor raises in KaizenDetector
            raise OverflowError("cannot convert float infinity to integer")
        return scores, surprise

    def _kernel_arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays score_learn_rows reads and writes, in its argument order (looked up per call:
        growing replaces them)."""
        lev, val, sea = self.lev, self.val, self.sea
        return (self.n, self.vmin, self.vmax, self.origin, self.width, self.last_ts, self.first_ts, self.levels,
                self.prof, self.visits, self.cal_ring, self.cal_pos, self.cal_top, self.cal_age, self.surprise,
                lev.ring, lev.pos, lev.n, lev.mean, lev.var, val.ring, val.pos, val.n, val.mean, val.var,
                sea.ring, sea.pos, sea.n, sea.mean, sea.var)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("DetectorColumns is checkpointed per slot (state(slot)), not pickled")


class ColumnSlot:
    """One series' detector held as a slot of a DetectorColumns: what a SeriesModel asks of its detector
    (checkpoint bytes, the last point's surprise, and a one-point score_learn for callers outside the
    batch path)."""

    __slots__ = ("cols", "slot")

    def __init__(self, cols: DetectorColumns, slot: int) -> None:
        self.cols = cols
        self.slot = slot

    @property
    def params(self) -> DetectorParams:
        return self.cols.params

    @property
    def surprise(self) -> float:
        return float(self.cols.surprise[self.slot])

    @property
    def n_seen(self) -> int:
        return int(self.cols.n[self.slot])

    def score_learn(self, timestamp: float, value: float) -> float:
        scores, _ = self.cols.score_learn_batch(np.array([self.slot], _I64), np.array([timestamp], _F64),
                                                np.array([value], _F64))
        return float(scores[0])

    def to_state(self) -> bytes:
        return self.cols.state(self.slot)

    @classmethod
    def adopt(cls, cols: DetectorColumns, det: KaizenDetector) -> ColumnSlot:
        """A slot holding `det`'s state (and its last surprise)."""
        if det.params != cols.params:
            raise ValueError("the detector's parameters are not the columns' parameters")
        slot = cols.new_slot() if det.n_seen == 0 else cols.add_state(det.to_state())
        cols.surprise[slot] = det.surprise
        return cls(cols, slot)
