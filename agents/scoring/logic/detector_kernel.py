"""KaizenDetector.score_learn compiled (numba) over the rows of a DetectorColumns: one loop over a batch's points.

The numpy rounds this replaces (the k-th point of every series in one numpy step) paid ~40 numpy calls a
round whatever its size: ≈ 1.4 µs a point at 4 points a series a message, most of it call overhead. Here
each point is the scalar code of `KaizenDetector.score_learn` (detectors.py) and of its parts
(detector_parts.py: `Likelihood.update`, `PatternCounter.novelty`, `RecentMax.push`), written against the
columns' arrays, line for line: every +, -, *, / is the same IEEE float64 operation in the same order (no
fastmath, so no fused multiply-add), `erfc`, `log10` and `sqrt` are the C library's, as Python's math
module uses them, and the short ring is summed as Python's sum() sums it. The scores and states are
therefore the detector's, bit for bit (tests/unit/test_vectorised_detector.py). The points are visited in
the order the caller gives (each series' points in time order); series do not share state, so how
series interleave does not matter.

Compiled once per machine: `cache=True` keeps the machine code beside this file (in __pycache__), so a
worker after the first loads it in ~0.1 s instead of compiling it (≈ 2 s); `warm()` does that at start.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["OVERFLOW", "score_learn_rows", "warm"]

_DAY = 86400.0
_HUGE = 1e100
_HASH = 0x9E3779B1
_COUNT_MAX = 65535
_SQRT2 = math.sqrt(2.0)
_Z_MIN2 = 1.5 * 1.5
OVERFLOW = -2   # returned when a level bin is past the float range (math.floor raises OverflowError)


@njit(cache=True)
def _ring_sum(ring: np.ndarray, r: int, size: int, neumaier: bool) -> float:
    """sum() of row r of the ring, as Python computes it: from 3.12 with Neumaier's compensation (`neumaier`),
    before that plainly, left to right."""
    total = 0.0 + ring[r, 0]
    if not neumaier:
        for j in range(1, size):
            total = total + ring[r, j]
        return total
    comp = 0.0
    for j in range(1, size):
        x = ring[r, j]
        t = total + x
        if abs(total) >= abs(x):
            comp += (total - t) + x
        else:
            comp += (x - t) + total
        total = t
    if comp != 0.0 and math.isfinite(comp):
        return total + comp
    return total


@njit(cache=True)
def _tail(d: float, m: float, v: float, min_var: float, two_sided: bool, decades: float) -> float:
    """Likelihood._tail."""
    ve = v if v > min_var else min_var
    if ve > 1e-18:
        if d * d < _Z_MIN2 * ve:
            return 0.0
        z = d / math.sqrt(ve)
    else:
        am = abs(m)
        z = d / (am * 1e-3 if am > 1e-6 else 1e-9)
    if two_sided:
        p = math.erfc(abs(z) / _SQRT2)
    else:
        p = 0.5 * math.erfc(z / _SQRT2)
    if p <= 0.0:
        return 1.0
    sc = -math.log10(p) / decades
    return 1.0 if sc > 1.0 else (sc if sc > 0.0 else 0.0)


@njit(cache=True)
def _update(ring: np.ndarray, pos: np.ndarray, cnt: np.ndarray, mean: np.ndarray, var: np.ndarray, r: int,
            raw: float, alpha: float, quiet: int, two_sided: bool, min_var: float, decades: float,
            neumaier: bool) -> float:
    """Likelihood.update of row r."""
    size = ring.shape[1]
    k = pos[r]
    ring[r, k] = raw
    pos[r] = k + 1 if k + 1 < size else 0
    n = cnt[r]
    cnt[r] = n + 1
    short = _ring_sum(ring, r, size, neumaier) / (n + 1 if n < size else size)
    m = mean[r]
    v = var[r]
    d = short - m
    a = alpha if n * alpha > 1.0 else 1.0 / (n + 1)
    mean[r] = m + a * d
    var[r] = (1.0 - a) * (v + a * d * d)
    if n < quiet or d == 0.0 or (d < 0.0 and not two_sided):
        return 0.0
    return _tail(d, m, v, min_var, two_sided, decades)


@njit(cache=True)
def _novelty(levels: np.ndarray, r: int, key: float, tbits: int, mask: int, adjacent: float) -> float:
    """PatternCounter.novelty of bin `key` in row r (its hash sees only key mod tbits)."""
    k = int(np.fmod(key, float(tbits))) % tbits
    h = (k * _HASH >> 7) & mask
    c = levels[r, h]
    if c < _COUNT_MAX:
        levels[r, h] = c + 1
    if c == 0 and adjacent < 1.0:
        lo = (((k - 1) % tbits) * _HASH >> 7) & mask
        hi = (((k + 1) % tbits) * _HASH >> 7) & mask
        if levels[r, lo] != 0 or levels[r, hi] != 0:
            return adjacent
    return 1.0 / (1.0 + c)


@njit(cache=True)
def _push(ring: np.ndarray, pos: np.ndarray, top: np.ndarray, age: np.ndarray, r: int, value: float) -> float:
    """RecentMax.push of row r (float32 ring): the prior maximum."""
    size = ring.shape[1]
    prior = top[r]
    k = pos[r]
    ring[r, k] = value
    pos[r] = k + 1 if k + 1 < size else 0
    stored = np.float64(ring[r, k])
    if stored >= prior:
        top[r] = stored
        age[r] = 0
        return prior
    a = age[r] + 1
    if a >= size:   # the max was just overwritten: rescan once, find the age of its newest copy
        best = np.float64(ring[r, 0])
        for j in range(1, size):
            if ring[r, j] > best:
                best = np.float64(ring[r, j])
        a = 0
        while np.float64(ring[r, (k - a) % size]) != best:
            a += 1
        top[r] = best
    age[r] = a
    return prior


@njit(cache=True)
def score_learn_rows(order, s, t, x, scores, surprise,                                  # noqa: ANN001
                     n_seen, vmin, vmax, origin, width, last_ts, first_ts, levels, prof, visits,
                     cal_ring, cal_pos, cal_top, cal_age, last_surprise,
                     lev_ring, lev_pos, lev_n, lev_mean, lev_var,
                     val_ring, val_pos, val_n, val_mean, val_var,
                     sea_ring, sea_pos, sea_n, sea_mean, sea_var,
                     ints, floats, neumaier):
    """KaizenDetector.score_learn of points order[0], order[1], ... (row s[i], time t[i], value x[i]),
    writing scores[i] and surprise[i]. Returns the number of points done: len(order), or OVERFLOW when a
    point's level bin is past the float range (that point's range and grid are taken in, as
    score_learn takes them in before math.floor raises; the points after it are not touched).

    ints: warmup, grid_at, bins, season_min, season_bins, season_days, lev_quiet, val_quiet, sea_quiet,
    tbits, mask, lev_two_sided, val_two_sided, sea_two_sided.
    floats: level_weight, adjacent, val_weight, season_weight, season_alpha, season_after, lev_alpha,
    val_alpha, sea_alpha, lev_min_var, val_min_var, sea_min_var, lev_decades, val_decades, sea_decades."""
    warmup, grid_at, bins, season_min, season_bins, season_days = ints[0], ints[1], ints[2], ints[3], ints[4], ints[5]
    lev_quiet, val_quiet, sea_quiet, tbits, mask = ints[6], ints[7], ints[8], ints[9], ints[10]
    lev_two, val_two, sea_two = ints[11] != 0, ints[12] != 0, ints[13] != 0
    level_weight, adjacent, val_weight, season_weight = floats[0], floats[1], floats[2], floats[3]
    season_alpha, season_after = floats[4], floats[5]
    lev_alpha, val_alpha, sea_alpha = floats[6], floats[7], floats[8]
    lev_min_var, val_min_var, sea_min_var = floats[9], floats[10], floats[11]
    lev_dec, val_dec, sea_dec = floats[12], floats[13], floats[14]
    nslots = prof.shape[1]
    period = _DAY * season_days
    slot_s = _DAY / season_bins
    for j in range(order.shape[0]):
        i = order[j]
        r = s[i]
        ts = t[i]
        v = x[i]
        if not (-_HUGE < v < _HUGE):
            # NaN/inf/absurd: a gap, the state untouched (score_learn)
            scores[i] = 0.0
            surprise[i] = last_surprise[r]
            continue
        n = n_seen[r]
        if v < vmin[r]:
            vmin[r] = v
        if v > vmax[r]:
            vmax[r] = v
        if width[r] == 0.0 and n + 1 >= grid_at:
            # freeze the grid once: bin ids stay comparable forever
            w = (vmax[r] - vmin[r]) / bins
            width[r] = w if w > 0.0 else max(abs(v) * 1e-3, 1e-9)
            origin[r] = vmin[r]
        s_lev = 0.0
        if width[r] > 0.0:
            key = np.floor((v - origin[r]) / width[r])   # (a float: math.floor is an int64 here)
            if not math.isfinite(key):
                return OVERFLOW
            s_lev = _update(lev_ring, lev_pos, lev_n, lev_mean, lev_var, r,
                            _novelty(levels, r, key, tbits, mask, adjacent),
                            lev_alpha, lev_quiet, lev_two, lev_min_var, lev_dec, neumaier)
        s_val = _update(val_ring, val_pos, val_n, val_mean, val_var, r, v,
                        val_alpha, val_quiet, val_two, val_min_var, val_dec, neumaier)
        s_sea = 0.0
        slot = int(ts % period * season_bins / _DAY) % nslots
        k = visits[r, slot]
        if n == 0:
            first_ts[r] = ts
        if k >= season_min and ts - first_ts[r] >= season_after * _DAY:
            if sea_n[r] >= sea_quiet:
                s_val = 0.0   # the residual, once it may score, replaces the value signal (which still learns)
            s_sea = _update(sea_ring, sea_pos, sea_n, sea_mean, sea_var, r, v - prof[r, slot],
                            sea_alpha, sea_quiet, sea_two, sea_min_var, sea_dec, neumaier)
        dt = ts - last_ts[r]
        last_ts[r] = ts
        if k == 0:
            prof[r, slot] = v
        elif dt > 0.0:
            a = season_alpha
            if dt < slot_s:
                a = a * dt / slot_s
            if a < 1.0 / (k + 1):
                a = 1.0 / (k + 1)   # the slot's first visits: a plain mean
            prof[r, slot] += a * (v - prof[r, slot])
        if k < _COUNT_MAX:
            visits[r, slot] = k + 1
        n_seen[r] = n + 1
        if n < warmup:
            last_surprise[r] = 1.0   # no opinion yet: the trend rules alone decide
            surprise[i] = 1.0
            scores[i] = 0.0
            continue
        score = level_weight * s_lev
        s_val *= val_weight
        if s_val > score:
            score = s_val
        s_sea *= season_weight
        if s_sea > score:
            score = s_sea
        if score > 1.0:
            score = 1.0
        last_surprise[r] = score
        surprise[i] = score
        prior = _push(cal_ring, cal_pos, cal_top, cal_age, r, score)
        scores[i] = score if score > prior else 0.0
    return order.shape[0]


def warm() -> None:
    """Compile (or load from the cache) before the first batch, so no message waits for it."""
    from agents.scoring.logic.vectorised import DetectorColumns

    cols = DetectorColumns(capacity=1)
    cols.score_learn_batch([cols.new_slot()], [0.0], [1.0])
