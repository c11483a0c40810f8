"""Per-series online anomaly detector: cheap signals, anomaly likelihood, alarm suppression."""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

from agents.logic.detector_parts import Likelihood, PatternCounter

__all__ = ["ANOMALY_THRESHOLD", "DEFAULT_PARAMS", "DetectorParams", "SeriesDetector", "score_series"]


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """All tuned parameters; the defaults were tuned on NAB (one set for every series, no per-file tuning)."""

    warmup: int = 150              # points scored 0 while the statistics settle (NAB probation is >= 15 %)
    grid_at: int = 300             # the value grid (origin, bin width) is frozen after this many points
    bins: int = 8                 # initial value range split into this many fine bins
    coarse_shift: int = 1          # coarse bin = fine bin >> shift, used for sequences (noise-tolerant)
    table_bits: int = 9            # each hashed pattern table has 2**bits uint16 counters
    level_weight: float = 1.0      # rare value level (fine bin count)
    neighbour: float = 0.0         # weight of the two adjacent bins' counts in the level familiarity
    season_weight: float = 1.0     # value far from its usual level at this time of day (daily profile)
    season_bins: int = 24          # time-of-day slots of the daily profile
    season_alpha: float = 0.1      # EW rate of each slot's level (per visit)
    season_min: int = 3            # visits of a slot before its residual is scored
    combine: float = 0.0           # 0: max of the signals; c > 0: max + c * (sum - max), evidence adds up
    min_sd: float = 0.0            # floor of the novelty likelihoods' spread (novelty is in [0, 1])
    seq_weight: float = 0.0        # rare sequence of three coarse bins
    val_weight: float = 1.0        # value short mean far from its long-run distribution (windowed Gaussian)
    short_win: int = 5            # short window of the novelty likelihoods
    long_alpha: float = 0.002      # EW rate of the novelty likelihoods' long-run distribution
    val_short: int = 3             # short window of the value likelihood
    val_alpha: float = 0.0005       # EW rate of the value distribution
    decay_every: int = 0           # >0: halve the pattern counts every this many points (forget old levels)
    decades: float = 8.0          # a tail probability of 10**-decades maps to score 1 (log scale)
    mute: int = 0                  # after reporting a score >= mute_level, report nothing for this many points
    mute_level: float = 0.79
    rest: int = 100                # report a score only if it beats every score of the last `rest` points


DEFAULT_PARAMS = DetectorParams()
# Score above which the live agent emits an insight: the NAB-optimal threshold (standard profile).
ANOMALY_THRESHOLD: float = 0.5

_VERSION = 1
_HEAD = struct.Struct("<B8sIddddqqqI")


def _fingerprint(p: DetectorParams) -> bytes:
    """Short digest of the parameters, so a checkpoint is never restored under different parameters."""
    return hashlib.blake2b(repr(astuple(p)).encode(), digest_size=8).digest()


class SeriesDetector:
    """Scores then learns each point of one metric series; score in [0, 1]."""

    __slots__ = ("p", "_n", "_vmin", "_vmax", "_origin", "_width", "_c1", "_c2", "_c3",
                 "_levels", "_seqs", "_lev", "_seq", "_val", "_hist", "_hpos", "_muted", "_prof", "_visits", "_sea")

    def __init__(self, params: DetectorParams | None = None) -> None:
        p = params or DEFAULT_PARAMS
        self.p = p
        self._n = 0
        self._vmin = math.inf
        self._vmax = -math.inf
        self._origin = 0.0
        self._width = 0.0          # 0 until the grid is frozen
        self._c1 = 0               # last three coarse bins (c3 oldest)
        self._c2 = 0
        self._c3 = 0
        self._levels = PatternCounter(p.table_bits)
        self._seqs = PatternCounter(p.table_bits)
        self._lev = Likelihood(p.short_win)
        self._seq = Likelihood(p.short_win)
        self._val = Likelihood(p.val_short, two_sided=True)
        # recent scores for the "beat the recent maximum" rule; float32 is precise enough to compare
        self._hist = array("f", bytes(4 * max(p.rest, 1)))
        self._hpos = 0
        self._muted = 0
        self._prof = array("d", bytes(8 * p.season_bins))
        self._visits = array("H", bytes(2 * p.season_bins))
        self._sea = Likelihood(p.val_short, two_sided=True)

    @property
    def n_seen(self) -> int:
        return self._n

    def score_one(self, timestamp: float, value: float) -> float:
        """Score `value` against what was learnt so far, then learn it. `timestamp` is epoch seconds."""
        x = float(value)
        if not math.isfinite(x):
            return 0.0
        p = self.p
        n = self._n
        if x < self._vmin:
            self._vmin = x
        if x > self._vmax:
            self._vmax = x
        if self._width == 0.0 and n + 1 >= p.grid_at:
            # Freeze the grid once so bin ids stay comparable forever; values outside the early range
            # get bin ids never seen before, which is exactly the novelty we want to notice.
            w = (self._vmax - self._vmin) / p.bins
            self._width = w if w > 0.0 else max(abs(x) * 1e-3, 1e-9)
            self._origin = self._vmin
        s_lev = s_seq = 0.0
        if self._width > 0.0:
            b = math.floor((x - self._origin) / self._width)
            c = b >> p.coarse_shift
            if p.decay_every and n % p.decay_every == 0:
                self._levels.halve()
                self._seqs.halve()
            r_lev = self._levels.novelty(b, p.neighbour)
            r_seq = self._seqs.novelty((self._c2 * 4099 + self._c1) * 4099 + c)
            self._c2, self._c1 = self._c1, c
            s_lev = self._lev.update(r_lev, p.long_alpha, p.decades, p.min_sd)
            s_seq = self._seq.update(r_seq, p.long_alpha, p.decades, p.min_sd)
        s_val = self._val.update(x, p.val_alpha, p.decades)
        s_sea = 0.0
        if p.season_weight > 0.0:
            slot = int(timestamp % 86400.0 * p.season_bins / 86400.0)
            k = self._visits[slot]
            if k >= p.season_min:
                s_sea = self._sea.update(x - self._prof[slot], p.val_alpha, p.decades)
            if k == 0:
                self._prof[slot] = x
            else:
                self._prof[slot] += p.season_alpha * (x - self._prof[slot])
            if k < 65535:
                self._visits[slot] = k + 1
        self._n = n + 1
        if n < p.warmup:
            return 0.0
        a, b2, c2, d2 = p.level_weight * s_lev, p.seq_weight * s_seq, p.val_weight * s_val, p.season_weight * s_sea
        top = max(a, b2, c2, d2)
        score = top + p.combine * (a + b2 + c2 + d2 - top)
        if score > 1.0:
            score = 1.0
        # One incident, one alarm: only a score above everything in the last `rest` points is reported.
        hist = self._hist
        prior = max(hist)
        hist[self._hpos] = score
        self._hpos = self._hpos + 1 if self._hpos + 1 < len(hist) else 0
        if self._muted > 0:
            self._muted -= 1
            return 0.0
        if score <= prior:
            return 0.0
        if score >= p.mute_level:
            self._muted = p.mute
        return score

    def score_many(self, points: Sequence[tuple[float, float]]) -> list[float]:
        """Batch path: same results as calling score_one in a loop (the state is sequential)."""
        f = self.score_one
        return [f(t, v) for t, v in points]

    def to_state(self) -> bytes:
        """Compact deterministic checkpoint (little-endian on the usual platforms), a few KB."""
        head = _HEAD.pack(_VERSION, _fingerprint(self.p), self._n, self._vmin, self._vmax, self._origin,
                          self._width, self._c1, self._c2, self._c3, self._hpos)
        return b"".join((head, self._levels.pack(), self._seqs.pack(), self._lev.pack(), self._seq.pack(),
                         self._val.pack(), self._hist.tobytes()))

    @classmethod
    def from_state(cls, data: bytes, params: DetectorParams | None = None) -> SeriesDetector:
        det = cls(params)
        (ver, fp, det._n, det._vmin, det._vmax, det._origin, det._width, det._c1, det._c2, det._c3,
         det._hpos) = _HEAD.unpack_from(data, 0)
        if ver != _VERSION or fp != _fingerprint(det.p):
            raise ValueError("checkpoint was written by another detector version or other parameters")
        off = _HEAD.size
        for part in (det._levels, det._seqs, det._lev, det._seq, det._val):
            off = part.unpack(data, off)
        hist = array("f")
        hist.frombytes(data[off:])
        if len(hist) != len(det._hist):
            raise ValueError("truncated detector checkpoint")
        det._hist = hist
        return det


def score_series(rows: Iterable[tuple[float, float]], params: DetectorParams | None = None) -> list[float]:
    """Replay path (`kaizen score`): one fresh detector over the rows, in order."""
    det = SeriesDetector(params)
    f = det.score_one
    return [f(t, v) for t, v in rows]
