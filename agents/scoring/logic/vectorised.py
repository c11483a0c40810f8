"""kaizen's default detector in columns: the state of every series of a partition in numpy arrays indexed
by series slot, scored one numpy step per round (the k-th point of each series in round k).

`DetectorColumns.score_batch(slots, ts, values)` gives exactly the scores (bit for bit) and the state that
`KaizenDetector.score_learn` gives on the same points, series by series in time order: every +, -, *, /
is the same IEEE float64 operation in the same order (the short ring summed column by column from 0,
as Python's sum() does), the rare deviations past the 1.5-sd gate get their erfc/log10 tail from the
detector's own `Likelihood._tail`, the float32 recent-max ring is rescanned per element when its
maximum expires, and the hashed level table is indexed per row (a round holds one point per series).
`state(slot)` are `KaizenDetector.to_state()` bytes and `load(slot, data)` reads them, so checkpoints,
the changelog and `kaizen score` are unchanged. tests/unit/test_vectorised_detector.py checks it all on
generated series; docs/throughput.md describes the design and its cost.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from math import erfc, log10
from typing import Any

import numpy as np

from agents.scoring.logic import detectors as _det
from agents.scoring.logic.detector_parts import _SQRT2, _Z_MIN2, Likelihood, RecentMax
from agents.scoring.logic.detectors import DEFAULT_PARAMS, DetectorParams, KaizenDetector

__all__ = ["MIN_ROUND", "ColumnSlot", "DetectorColumns"]

# A round with fewer points than this costs more in numpy calls than the per-point detector: the series
# still holding points past it are scored by a KaizenDetector built from their row (and written back).
MIN_ROUND = 12

_DAY = 86400.0
_HUGE = 1e100
_HASH = 0x9E3779B1
_COUNT_MAX = 65535
# Python >= 3.12 sums floats with Neumaier's compensation; 3.11 adds plainly, left to right.
_NEUMAIER = sys.version_info >= (3, 12)
_F64 = np.float64
_I64 = np.int64


def _ring_sum(rows: np.ndarray) -> np.ndarray:
    """Python's sum() of each row, bit for bit: 0 + r0, then each next column in order."""
    total = 0.0 + rows[:, 0]
    if not _NEUMAIER:
        for j in range(1, rows.shape[1]):
            total = total + rows[:, j]
        return total
    comp = np.zeros_like(total)
    for j in range(1, rows.shape[1]):
        x = rows[:, j]
        t = total + x
        comp += np.where(np.abs(total) >= np.abs(x), (total - t) + x, (x - t) + total)
        total = t
    fix = (comp != 0.0) & np.isfinite(comp)
    return np.where(fix, total + comp, total)


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

    def update(self, r: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Likelihood.update for rows `r` (distinct) with values `raw`."""
        size = self.size
        pos = self.pos[r]
        self.ring[r, pos] = raw
        nxt = pos + 1
        nxt[nxt >= size] = 0
        self.pos[r] = nxt
        n = self.n[r]
        self.n[r] = n + 1
        short = _ring_sum(self.ring[r]) / np.where(n < size, n + 1, size)
        m = self.mean[r]
        v = self.var[r]
        d = short - m
        nf = n.astype(_F64)
        alpha = self.alpha
        a = np.where(nf * alpha > 1.0, alpha, 1.0 / (nf + 1.0))
        self.mean[r] = m + a * d
        self.var[r] = (1.0 - a) * (v + a * d * d)
        cand = (n >= self.quiet) & (d > 0.0 if not self.two_sided else d != 0.0)
        ve = np.where(v > self.min_var, v, self.min_var)
        cand &= (ve <= 1e-18) | (d * d >= _Z_MIN2 * ve)
        out = np.zeros(len(r), _F64)
        idx = np.flatnonzero(cand)
        if idx.size:
            out[idx] = self._tail(d[idx], m[idx], ve[idx])
        return out

    def _tail(self, d: np.ndarray, m: np.ndarray, ve: np.ndarray) -> np.ndarray:
        """Likelihood._tail of deviations past the gate: the arithmetic in numpy, erfc and log10 by Python's
        math per element (numpy's own log10 may differ in the last bit)."""
        flat = ve <= 1e-18
        with np.errstate(divide="ignore", invalid="ignore"):
            z = d / np.sqrt(ve)
        if flat.any():
            # flat history: any move is surprising, scaled by the value itself so 1e-9 jitter is not
            am = np.abs(m[flat])
            z[flat] = d[flat] / np.where(am > 1e-6, am * 1e-3, 1e-9)
        if self.two_sided:
            p = np.array([erfc(u) for u in (np.abs(z) / _SQRT2).tolist()])
        else:
            p = 0.5 * np.array([erfc(u) for u in (z / _SQRT2).tolist()])
        lg = np.array([log10(q) if q > 0.0 else 0.0 for q in p.tolist()])
        sc = -lg / self.decades
        sc = np.where(sc > 1.0, 1.0, np.where(sc > 0.0, sc, 0.0))
        return np.where(p <= 0.0, 1.0, sc)

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
        self.min_round = MIN_ROUND
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
        self._mark = np.zeros(cap, _I64)      # scratch: finds a batch's repeated slots

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
        mark = self._mark
        if len(mark) < self._cap:
            mark = self._mark = np.zeros(self._cap, _I64)
        seq = np.arange(total)
        mark[s] = seq
        if (mark[s] == seq).all():                   # one point per slot: a single round
            order = seq
            rank = np.zeros(total, _I64)
        else:
            order = np.lexsort((t, s))               # by slot, then time; stable
            ss = s[order]
            first = np.ones(total, bool)
            first[1:] = ss[1:] != ss[:-1]
            rank = seq - np.maximum.accumulate(np.where(first, seq, 0))
        counts = np.bincount(rank)
        rounds = len(counts)
        vec_rounds = rounds
        for k in range(rounds):
            if counts[k] < self.min_round:
                vec_rounds = k
                break
        if rounds == 1:
            by_round = order
        else:
            by_round = order[np.argsort(rank, kind="stable")]
        start = 0
        for k in range(vec_rounds):
            sel = by_round[start:start + counts[k]]
            start += counts[k]
            sc, su = self._round(s[sel], t[sel], x[sel])
            scores[sel] = sc
            surprise[sel] = su
        if start < total:
            self._per_point(by_round[start:], s, t, x, scores, surprise)
        return scores, surprise

    def _per_point(self, rest: np.ndarray, s: np.ndarray, t: np.ndarray, x: np.ndarray, scores: np.ndarray,
                   surprise: np.ndarray) -> None:
        """The points of the thin rounds, per series through a KaizenDetector (in round order, which is
        each series' time order)."""
        groups: dict[int, list[int]] = {}
        for i in rest.tolist():
            groups.setdefault(int(s[i]), []).append(i)
        for slot, idx in groups.items():
            det = self.detector(slot)
            f = det.score_learn
            for i in idx:
                scores[i] = f(float(t[i]), float(x[i]))
                surprise[i] = det.surprise
            self.store_detector(slot, det)

    def _round(self, r: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One point of each of the (distinct) rows `r`: KaizenDetector.score_learn, in columns."""
        m = len(r)
        scores = np.zeros(m, _F64)
        ok = (x > -_HUGE) & (x < _HUGE)     # NaN/inf/absurd: a gap, state untouched (score_learn)
        if not ok.all():
            keep = np.flatnonzero(ok)
            surprise = self.surprise[r]
            if keep.size:
                sc, su = self._round(r[keep], t[keep], x[keep])
                scores[keep] = sc
                surprise[keep] = su
            return scores, surprise
        p = self.params
        n = self.n[r]
        vmin = self.vmin[r]
        vmax = self.vmax[r]
        vmin = np.where(x < vmin, x, vmin)
        vmax = np.where(x > vmax, x, vmax)
        width = self.width[r]
        freeze = (width == 0.0) & (n + 1 >= p.grid_at)
        f = np.flatnonzero(freeze) if freeze.any() else None
        origin = self.origin[r]
        if f is not None:
            # freeze the grid once: bin ids stay comparable forever (KaizenDetector.score_learn)
            w = (vmax[f] - vmin[f]) / p.bins
            ax = np.abs(x[f]) * 1e-3
            width[f] = np.where(w > 0.0, w, np.where(1e-9 > ax, 1e-9, ax))
            origin[f] = vmin[f]
        has = np.flatnonzero(width > 0.0)
        key = None
        if has.size:
            with np.errstate(over="ignore"):
                key = np.floor((x[has] - origin[has]) / width[has])
            if not np.isfinite(key).all():
                # as math.floor raises; raised before this round writes anything
                raise OverflowError("cannot convert float infinity to integer")
        self.vmin[r] = vmin
        self.vmax[r] = vmax
        if f is not None:
            self.width[r[f]] = width[f]
            self.origin[r[f]] = origin[f]
        s_lev = np.zeros(m, _F64)
        if key is not None:
            s_lev[has] = self.lev.update(r[has], self._novelty(r[has], key))
        s_val = self.val.update(r, x)
        # time-of-day profile
        slot = (np.remainder(t, _DAY * p.season_days) * p.season_bins / _DAY).astype(_I64) % self._bins
        k = self.visits[r, slot]
        pv = self.prof[r, slot]
        s_sea = np.zeros(m, _F64)
        first = np.where(n == 0, t, self.first_ts[r])
        self.first_ts[r] = first
        seen = (k >= p.season_min) & (t - first >= p.season_after * _DAY)
        if seen.any():
            sr = np.flatnonzero(seen)
            rs = r[sr]
            # the residual, once its likelihood may score, replaces the value signal (score_learn)
            s_val[sr] = np.where(self.sea.n[rs] >= self.sea.quiet, 0.0, s_val[sr])
            s_sea[sr] = self.sea.update(rs, x[sr] - pv[sr])
        # the slot's rate per visit: season_alpha per day, scaled by the interval since the last point
        dt = t - self.last_ts[r]
        self.last_ts[r] = t
        slot_s = _DAY / p.season_bins
        a = np.where(dt < slot_s, p.season_alpha * dt / slot_s, p.season_alpha)
        w = 1.0 / (k + 1.0)                  # the slot's first visits: a plain mean (as score_learn)
        a = np.where(a < w, w, a)
        self.prof[r, slot] = np.where(k == 0, x, np.where(dt > 0.0, pv + a * (x - pv), pv))
        self.visits[r, slot] = np.where(k < _COUNT_MAX, k + 1, k)
        self.n[r] = n + 1
        score = p.level_weight * s_lev
        s_val = s_val * p.val_weight
        score = np.where(s_val > score, s_val, score)
        s_sea = s_sea * p.season_weight
        score = np.where(s_sea > score, s_sea, score)
        score = np.where(score > 1.0, 1.0, score)
        warm = n < p.warmup
        surprise = np.where(warm, 1.0, score)
        self.surprise[r] = surprise
        live = np.flatnonzero(~warm)
        if live.size:
            sc = score[live]
            prior = self._push(r[live], sc)
            scores[live] = np.where(sc > prior, sc, 0.0)
        return scores, surprise

    def _novelty(self, r: np.ndarray, key: np.ndarray) -> np.ndarray:
        """PatternCounter.novelty of each row's level bin `key` (counting it), per row of the level table."""
        mod = self._tbits
        k = np.fmod(key, float(mod)).astype(_I64) % mod
        mask = self._mask
        h = (k * _HASH >> 7) & mask
        c = self.levels[r, h]
        self.levels[r, h] = np.where(c < _COUNT_MAX, c + 1, c)
        nov = 1.0 / (1.0 + c.astype(_F64))
        adjacent = self.params.adjacent
        if adjacent < 1.0:
            zero = np.flatnonzero(c == 0)
            if zero.size:
                rz, kz = r[zero], k[zero]
                lo = (((kz - 1) % mod) * _HASH >> 7) & mask
                hi = (((kz + 1) % mod) * _HASH >> 7) & mask
                near = (self.levels[rz, lo] != 0) | (self.levels[rz, hi] != 0)
                nov[zero[near]] = adjacent
        return nov

    def _push(self, r: np.ndarray, sc: np.ndarray) -> np.ndarray:
        """RecentMax.push of each row: the prior maximum, then the score into the float32 ring."""
        size = self._rest
        prior = self.cal_top[r]
        pos = self.cal_pos[r]
        self.cal_ring[r, pos] = sc
        nxt = pos + 1
        nxt[nxt >= size] = 0
        self.cal_pos[r] = nxt
        stored = self.cal_ring[r, pos].astype(_F64)
        ge = stored >= prior
        age = np.where(ge, 0, self.cal_age[r] + 1)
        top = np.where(ge, stored, prior)
        expired = np.flatnonzero(age >= size)
        if expired.size:   # the max was just overwritten: rescan those rows, find their max's newest copy
            rings = self.cal_ring[r[expired]]
            best = rings.max(axis=1)
            back = (pos[expired][:, None] - np.arange(size)) % size
            newest = np.take_along_axis(rings, back, axis=1) == best[:, None]
            top[expired] = best.astype(_F64)
            age[expired] = np.argmax(newest, axis=1)
        self.cal_top[r] = top
        self.cal_age[r] = age
        return prior

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
