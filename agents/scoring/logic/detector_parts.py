"""Building blocks of the series detector: anomaly likelihood of a signal and a hashed pattern counter."""

from __future__ import annotations

import math
import struct
from array import array

__all__ = ["Likelihood", "PatternCounter", "RecentMax", "log_score"]

_SQRT2 = math.sqrt(2.0)
# Deviations under 1.5 sd score 0 instead of < 0.15: far below any alarm level, and skipping the tail
# computation for the common quiet point is most of the scoring time saved.
_Z_MIN2 = 1.5 * 1.5


def log_score(p_tail: float, decades: float) -> float:
    """Map a tail probability to [0, 1] on a log scale: 10**-decades -> 1, 1 -> 0 (Numenta's log-likelihood)."""
    if p_tail <= 0.0:
        return 1.0
    s = -math.log10(p_tail) / decades
    return 1.0 if s > 1.0 else (0.0 if s < 0.0 else s)


class Likelihood:
    """Anomaly likelihood of one signal: mean of the last `short` raw values against the long-run
    (exponentially weighted) distribution of that same short mean.

    Scoring the short mean rather than the raw value means a single noisy point moves the score a little
    and a sustained change moves it a lot, which is what separates incidents from noise. The
    distribution is of the short mean, so its spread is the spread the score is actually compared with.
    """

    __slots__ = ("ring", "size", "pos", "mean", "var", "n", "two_sided", "alpha", "decades", "quiet", "min_var")
    _HEAD = struct.Struct("<IIdd")

    def __init__(self, short: int, alpha: float, decades: float, quiet: int = 0, min_sd: float = 0.0,
                 two_sided: bool = False) -> None:
        self.ring = array("d", bytes(8 * short))
        self.size = short
        self.pos = 0
        self.mean = 0.0
        self.var = 0.0
        self.n = 0
        # configuration (from the parameters, not part of the checkpoint)
        self.two_sided = two_sided
        self.alpha = alpha            # EW rate of the long-run distribution
        self.decades = decades        # a tail probability of 10**-decades scores 1
        self.quiet = quiet            # updates before it may score
        self.min_var = min_sd * min_sd

    def update(self, raw: float) -> float:
        """Add `raw`; return the log-scaled tail probability of the current short mean, scored against
        the distribution learnt before it (score first, then learn)."""
        ring = self.ring
        k = self.pos
        ring[k] = raw
        size = self.size
        self.pos = k + 1 if k + 1 < size else 0
        n = self.n
        self.n = n + 1
        # sum() of a handful of slots is exact and cheaper than a running total that drifts after 1e12 spikes
        short = sum(ring) / (n + 1 if n < size else size)
        m = self.mean
        v = self.var
        d = short - m
        # alpha is raised to 1/(n+1) at first so early points get a plain running mean
        alpha = self.alpha
        a = alpha if n * alpha > 1.0 else 1.0 / (n + 1)
        self.mean = m + a * d
        self.var = (1.0 - a) * (v + a * d * d)
        if n < self.quiet or d == 0.0 or (d < 0.0 and not self.two_sided):
            return 0.0
        return self._tail(d, m, v)

    def peek(self, raw: float) -> float:
        """What update(raw) would return, without learning anything (River's score_one)."""
        ring = self.ring
        n = self.n
        size = self.size
        pos = self.pos
        total = 0.0
        for i, r in enumerate(ring):  # the same sum, in the same order, as update() would take
            total += raw if i == pos else r
        short = total / (n + 1 if n < size else size)
        d = short - self.mean
        if n < self.quiet or d == 0.0 or (d < 0.0 and not self.two_sided):
            return 0.0
        return self._tail(d, self.mean, self.var)

    def _tail(self, d: float, m: float, v: float) -> float:
        """Log-scaled tail probability of a deviation `d` from mean `m` under variance `v`."""
        ve = v if v > self.min_var else self.min_var
        if ve > 1e-18:
            if d * d < _Z_MIN2 * ve:
                return 0.0
            z = d / math.sqrt(ve)
        else:
            # flat history: any move is surprising, scaled by the value itself so 1e-9 jitter is not
            z = d / (abs(m) * 1e-3 if abs(m) > 1e-6 else 1e-9)
        if self.two_sided:
            p = math.erfc(abs(z) / _SQRT2)
        else:
            p = 0.5 * math.erfc(z / _SQRT2)
        if p <= 0.0:
            return 1.0
        sc = -math.log10(p) / self.decades
        return 1.0 if sc > 1.0 else (sc if sc > 0.0 else 0.0)

    def pack(self) -> bytes:
        return self._HEAD.pack(self.pos, self.n, self.mean, self.var) + self.ring.tobytes()

    def unpack(self, data: bytes, offset: int) -> int:
        """Restore from `data` at `offset`; return the offset after this block."""
        self.pos, self.n, self.mean, self.var = self._HEAD.unpack_from(data, offset)
        offset += self._HEAD.size
        end = offset + 8 * self.size
        ring = array("d")
        ring.frombytes(data[offset:end])
        if len(ring) != self.size:
            raise ValueError("truncated likelihood state")
        self.ring = ring
        return end


class PatternCounter:
    """Counts of quantised patterns (a value bin, a short sequence of bins) in a fixed hashed table.

    A pattern never seen before is novel (1.0), a common one is not (1/(1+count)). Collisions only make
    patterns look more familiar, so a small table errs on the quiet side.
    """

    __slots__ = ("table", "mask")

    def __init__(self, bits: int) -> None:
        self.table = array("H", bytes(2 << bits))
        self.mask = (1 << bits) - 1

    def _slot(self, key: int) -> int:
        return (key * 0x9E3779B1) >> 7 & self.mask  # multiplicative hash spreads neighbouring keys

    def peek(self, key: int, adjacent: float = 1.0) -> float:
        """What novelty(key) would return, without counting it."""
        tab = self.table
        c = tab[self._slot(key)]
        if c == 0 and adjacent < 1.0 and (tab[self._slot(key - 1)] or tab[self._slot(key + 1)]):
            return adjacent
        return 1.0 / (1.0 + c)

    def novelty(self, key: int, adjacent: float = 1.0) -> float:
        """Novelty of `key` before counting it, then count it. A never-seen key next to a seen one
        (key +- 1) scores `adjacent` instead of 1: a new extreme just past the known range is far less
        telling than a jump to a level never visited."""
        tab = self.table
        h = self._slot(key)
        c = tab[h]
        if c < 65535:
            tab[h] = c + 1
        if c == 0 and adjacent < 1.0 and (tab[self._slot(key - 1)] or tab[self._slot(key + 1)]):
            return adjacent
        return 1.0 / (1.0 + c)

    def pack(self) -> bytes:
        return self.table.tobytes()

    def unpack(self, data: bytes, offset: int) -> int:
        end = offset + 2 * len(self.table)
        tab = array("H")
        tab.frombytes(data[offset:end])
        self.table = tab
        return end


class RecentMax:
    """Maximum of the last `size` values (float32 ring), O(1) per push except when the max expires."""

    __slots__ = ("ring", "pos", "top", "age")
    _HEAD = struct.Struct("<IdI")

    def __init__(self, size: int) -> None:
        self.ring = array("f", bytes(4 * max(size, 1)))
        self.pos = 0
        self.top = 0.0      # max of the ring
        self.age = 0        # pushes since the newest copy of `top` was written

    def push(self, value: float) -> float:
        """Return the max of the previous `size` values, then add `value`."""
        ring = self.ring
        prior = self.top
        k = self.pos
        ring[k] = value
        size = len(ring)
        self.pos = k + 1 if k + 1 < size else 0
        stored = ring[k]    # float32-rounded, as max() over the ring would see it
        if stored >= prior:
            self.top, self.age = stored, 0
        else:
            self.age += 1
            if self.age >= size:
                # the max was just overwritten: rescan once and find the age of its newest copy
                top = max(ring)
                age = 0
                while ring[(k - age) % size] != top:
                    age += 1
                self.top, self.age = top, age
        return prior

    def pack(self) -> bytes:
        return self._HEAD.pack(self.pos, self.top, self.age) + self.ring.tobytes()

    def unpack(self, data: bytes, offset: int) -> int:
        self.pos, self.top, self.age = self._HEAD.unpack_from(data, offset)
        offset += self._HEAD.size
        end = offset + 4 * len(self.ring)
        ring = array("f")
        ring.frombytes(data[offset:end])
        if len(ring) != len(self.ring):
            raise ValueError("truncated recent-max state")
        self.ring = ring
        return end
