"""TrendTracker.observe's usual path compiled (numba) over the rows of a TrendColumns: one loop over a batch.

The numpy rounds it replaces (the k-th point of every series in one numpy step, trend_columns.py) paid
some sixty numpy calls a round whatever its size: at four points a series a message that was most of the
trend rules' cost. Here each point is `TrendTracker.observe`'s scalar code written against the columns'
arrays, in the caller's order (each series' points in time order; series share no state): the window
update (every +, -, * the same IEEE float64 operation in the same order, no fastmath), the exact
re-summation due once per ring length (`fsum` below: CPython's `math.fsum`, the same correctly rounded
sums), the window statistics and the quiet branch of `trends.decide` (no incident active, no rule holding,
no drift fit due: the calm count and the re-arming).

The loop stops at a point it does not finish, and says why; the caller finishes that point in Python
and calls it again from the next one:
- LOUD: a rule holds, an incident is active or the drift fit is due. The point's window update is done;
  `stats` holds its baseline mean, std and recent mean for `decide`, which the caller runs on a tracker
  loaded with the row.
- UNSURE: the point's re-summation met a value it cannot sum as `math.fsum` does (an overflow or an
  infinity, where fsum raises or returns a special value). Nothing of the point is done; the caller runs
  it through the numpy round, which raises where the tracker raises.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["DONE", "LOUD", "PARTIALS", "UNSURE", "fsum_array", "quiet_run", "warm"]

DONE, LOUD, UNSURE = 0, 1, 2
_LAT, _ERR, _UTIL, _THR = 0, 1, 2, 3          # trend_columns.KINDS' order
_RATIO, _COUNT = 1, 2                         # trend_columns.UNITS' order
PARTIALS = 128                               # a double sum needs at most ~40 partials


@njit(cache=True)
def fsum_array(xs: np.ndarray, n: int, partials: np.ndarray) -> tuple[float, bool]:
    """math.fsum(xs[:n]) for finite xs (CPython 3.11's algorithm: Shewchuk's partials, then the
    correctly rounded total with the half-even fix across partials), and True; (0.0, False) when a
    partial sum leaves the float range (fsum raises OverflowError there) or a value is not finite."""
    m = 0
    for k in range(n):
        x = xs[k]
        if not math.isfinite(x):
            return 0.0, False
        i = 0
        for j in range(m):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        m = i
        if x != 0.0:
            if not math.isfinite(x):
                return 0.0, False
            if m >= partials.shape[0]:
                return 0.0, False
            partials[m] = x
            m += 1
    hi = 0.0
    if m > 0:
        m -= 1
        hi = partials[m]
        lo = 0.0
        while m > 0:
            x = hi
            m -= 1
            y = partials[m]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if m > 0 and ((lo < 0.0 and partials[m - 1] < 0.0) or (lo > 0.0 and partials[m - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi, True


@njit(cache=True)
def _rule_holds(bm: float, bs: float, cm: float, kind: int, unit: int, std_k: float, latency_increase: float,
                error_increase: float, utilization_max: float, throughput_drop: float) -> bool:
    """trends.any_rule_holds, branch for branch."""
    if kind == _THR:
        return (bs > 0.0 and cm < bm - std_k * bs) or (bm > 0.0 and (bm - cm) / bm > throughput_drop)
    if bs > 0.0 and cm > bm + std_k * bs:
        return True
    if kind == _LAT:
        return bm > 0.0 and (cm - bm) / bm > latency_increase
    if kind == _UTIL:
        return cm > utilization_max
    if kind == _ERR:
        if unit == _COUNT:
            if bm > 0.0:
                rise = (cm - bm) / bm
            else:
                rise = math.inf if cm > 0.0 else 0.0
            return rise > error_increase / 100.0
        return (cm - bm) * (100.0 if unit == _RATIO else 1.0) > error_increase
    return False


@njit(cache=True)
def quiet_run(rows: np.ndarray, x: np.ndarray, start: int, ring: np.ndarray, ref: np.ndarray, bsum: np.ndarray,
              bsq: np.ndarray, csum: np.ndarray, filled: np.ndarray, pos: np.ndarray, steps: np.ndarray,
              active: np.ndarray, calm: np.ndarray, reported: np.ndarray, kind: np.ndarray, unit: np.ndarray,
              cs: int, min_baseline: int, clear: int, std_k: float, latency_increase: float,
              error_increase: float, utilization_max: float, throughput_drop: float, stats: np.ndarray,
              scratch: np.ndarray, partials: np.ndarray) -> tuple[int, int]:
    """TrendTracker.observe of the points start.. of (rows, x) until one it does not finish: returns (DONE,
    len) or (LOUD | UNSURE, that point's index); see the module's docstring."""
    size = ring.shape[1]
    n = rows.shape[0]
    for i in range(start, n):
        v = x[i]
        if not math.isfinite(v):      # TrendTracker.observe ignores the point
            continue
        r = rows[i]
        f = filled[r]
        rf = v if f == 0 else ref[r]
        p = pos[r]
        b1 = bsum[r]
        q1 = bsq[r]
        c1 = csum[r]
        if f == size:                 # the oldest value leaves the baseline
            old = ring[r, p] - rf
            b1 = b1 - old
            q1 = q1 - old * old
        if f >= cs:                   # the oldest recent value moves into it
            back = p - cs
            if back < 0:
                back += size
            mv = ring[r, back] - rf
            c1 = c1 - mv
            b1 = b1 + mv
            q1 = q1 + mv * mv
        c1 = c1 + (v - rf)
        np_ = p + 1
        if np_ == size:
            np_ = 0
        nf = f + 1 if f < size else size
        st = steps[r] + 1
        if st >= size:                # TrendTracker._resum: exact sums of the ring after this point
            nb0 = nf - (cs if cs < nf else nf)
            for k in range(nf):       # the differences in time order, the new value last
                j = np_ - nf + k
                if j < 0:
                    j += size
                scratch[k] = (v if j == p else ring[r, j]) - rf
            b1, ok1 = fsum_array(scratch, nb0, partials)
            for k in range(nb0):
                scratch[size + k] = scratch[k] * scratch[k]
            q1, ok2 = fsum_array(scratch[size:], nb0, partials)
            c1, ok3 = fsum_array(scratch[nb0:], nf - nb0, partials)
            if not (ok1 and ok2 and ok3):
                return UNSURE, i
            st = 0
        # the point is taken: its window update
        ring[r, p] = v
        if f == 0:
            ref[r] = rf
        bsum[r] = b1
        bsq[r] = q1
        csum[r] = c1
        pos[r] = np_
        filled[r] = nf
        steps[r] = st
        nb = nf - cs
        if nb < min_baseline:
            continue
        bmean = b1 / nb
        bm = rf + bmean
        q = q1 / nb - bmean * bmean
        bs = math.sqrt(0.0 if 0.0 > q else q)
        cm = rf + c1 / cs
        k_ = kind[r]
        drift_due = k_ == _LAT and bm > 0.0 and cm - bm > bm * latency_increase / 4 and nf == size
        if active[r] != 0 or drift_due or _rule_holds(bm, bs, cm, k_, unit[r], std_k, latency_increase,
                                                      error_increase, utilization_max, throughput_drop):
            stats[0] = bm
            stats[1] = bs
            stats[2] = cm
            return LOUD, i
        c = calm[r] + 1               # the usual quiet point: nothing held before, nothing holds now
        calm[r] = c
        if c >= clear:
            reported[r] = 0
    return DONE, n


def warm() -> None:
    """Compile (first run on a machine) or load the loop before the first message."""
    rows = np.zeros(1, np.int64)
    ring = np.zeros((1, 4), np.float64)
    f64 = np.zeros(1, np.float64)
    i64 = np.zeros(1, np.int64)
    quiet_run(rows, np.ones(1), 0, ring, f64.copy(), f64.copy(), f64.copy(), f64.copy(), i64.copy(), i64.copy(),
              i64.copy(), i64.copy(), i64.copy(), i64.copy(), i64.copy(), i64.copy(), 1, 1, 1, 2.0, 0.2, 5.0,
              80.0, 0.3, np.zeros(3), np.zeros(8), np.zeros(PARTIALS))
