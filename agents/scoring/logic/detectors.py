"""Per-series online anomaly detector: three cheap signals, anomaly likelihood, one alarm per incident."""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass

from agents.scoring.logic.detector_parts import Likelihood, PatternCounter, RecentMax

__all__ = ["ANOMALY_THRESHOLD", "DEFAULT_PARAMS", "DetectorParams", "SeriesDetector", "score_series"]

_DAY = 86400.0
_HUGE = 1e100

# How the design was chosen (benchmarks/nab_quality.py; 41 NAB files, one threshold for all, standard profile):
#   windowed Gaussian alone ~39; + level rarity ~53; + "beat the last 100 scores" suppression ~62;
#   + daily profile residual ~66; + adjacent-bin novelty and a settle period per likelihood 69.6
#   (Numenta HTM 68.9 on the same files). Halving or doubling any single parameter keeps 66-70 except
#   level_weight x0.5 (57) and rest x2 (63.5), so the score is not one lucky point.
# Tried and dropped (no gain on NAB): sequence-of-bins novelty, forgetting counts, time-based muting after
# an alarm, log-transformed values, a weekly profile, a fast-moving windowed Gaussian, level x
# time-of-day counts (better on realKnownCause/realAdExchange, worse on realTweets: a wash).


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """All tuned parameters; the defaults were tuned on NAB (one set for every series, no per-file tuning)."""

    warmup: int = 150              # points scored 0 while the statistics settle
    grid_at: int = 300             # the value grid (origin, bin width) is frozen after this many points
    bins: int = 8                  # the range seen until then is split into this many bins
    table_bits: int = 9            # the level-count table has 2**bits uint16 counters
    level_weight: float = 1.0      # signal 1: value in a rarely seen level (bin count)
    adjacent: float = 0.5          # ... novelty of a never-seen bin next to a seen one (1 = as novel as any)
    # ... floor of the level likelihood's spread. 0.02 cuts alarms on pure Gaussian noise from ~8 to ~1 per
    # 10k points but costs ~1.7 NAB points (rare-level incidents in realKnownCause); kept at 0 for NAB.
    lev_min_sd: float = 0.0
    short_win: int = 5             # ... its likelihood's short window
    long_alpha: float = 0.002      # ... EW rate of its long-run distribution
    val_weight: float = 1.0        # signal 2: short mean of values far from their long-run distribution
    val_short: int = 3             # ... short window (also used by signal 3)
    val_alpha: float = 0.0005      # ... EW rate of the long-run distribution (also used by signal 3)
    season_weight: float = 1.0     # signal 3: value far from its usual level at this time of day
    season_bins: int = 24          # ... time-of-day slots of the daily profile
    season_days: int = 1           # ... profile period in days (7: weekly profile, slots per day unchanged)
    season_alpha: float = 0.1      # ... EW rate of each slot's level (per visit)
    season_min: int = 3            # ... visits of a slot before its residual is scored
    quiet: int = 50                # updates of each likelihood before it may score (its distribution settles)
    decades: float = 8.0           # a tail probability of 10**-decades maps to score 1 (log scale)
    rest: int = 100                # report a score only if it beats every score of the last `rest` points


DEFAULT_PARAMS = DetectorParams()
# Score at or above which the live agent emits an insight: the NAB-optimal threshold (standard profile).
ANOMALY_THRESHOLD: float = 0.9786

_VERSION = 1
_HEAD = struct.Struct("<B8sIdddd")


@functools.lru_cache(maxsize=64)
def _fingerprint(p: DetectorParams) -> bytes:
    """Short digest of the parameters, so a checkpoint is never restored under different parameters."""
    return hashlib.blake2b(repr(astuple(p)).encode(), digest_size=8).digest()


class SeriesDetector:
    """Scores then learns each point of one metric series; score in [0, 1].

    Three cheap signals, each turned into an anomaly likelihood (short mean against its own long-run
    distribution, Gaussian tail, log scale) so they are comparable across series and with each other:
      1. level rarity: how rarely the value's bin (on a grid frozen early) has been seen;
      2. windowed Gaussian on the value itself;
      3. the residual from a daily time-of-day profile (catches "right value, wrong time").
    The score is the strongest of them, reported only when it beats every score of the last `rest`
    points, so one incident gives one alarm (NAB only rewards the first detection in a window and
    charges every extra one outside it).
    """

    __slots__ = ("p", "_n", "_vmin", "_vmax", "_origin", "_width", "_levels", "_lev", "_val", "_sea",
                 "_prof", "_visits", "_recent")

    def __init__(self, params: DetectorParams | None = None) -> None:
        p = params or DEFAULT_PARAMS
        self.p = p
        self._n = 0
        self._vmin = math.inf
        self._vmax = -math.inf
        self._origin = 0.0
        self._width = 0.0          # 0 until the grid is frozen
        self._levels = PatternCounter(p.table_bits)
        self._lev = Likelihood(p.short_win, p.long_alpha, p.decades, p.quiet, p.lev_min_sd)
        self._val = Likelihood(p.val_short, p.val_alpha, p.decades, p.quiet, two_sided=True)
        self._sea = Likelihood(p.val_short, p.val_alpha, p.decades, p.quiet, two_sided=True)
        self._prof = array("d", bytes(8 * p.season_bins * p.season_days))
        self._visits = array("H", bytes(2 * p.season_bins * p.season_days))
        self._recent = RecentMax(p.rest)   # recent scores for the "beat the recent maximum" rule

    @property
    def n_seen(self) -> int:
        return self._n

    def score_one(self, timestamp: float, value: float) -> float:
        """Score `value` against what was learnt so far, then learn it. `timestamp` is epoch seconds."""
        x = float(value)
        if not -_HUGE < x < _HUGE:
            # NaN/inf is a gap, not evidence; absurd magnitudes would overflow the squared statistics
            # and poison the state forever. Either way the point is skipped and the state left untouched.
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
        s_lev = 0.0
        if self._width > 0.0:
            r_lev = self._levels.novelty(math.floor((x - self._origin) / self._width), p.adjacent)
            s_lev = self._lev.update(r_lev)
        s_val = self._val.update(x)
        s_sea = 0.0
        prof, visits = self._prof, self._visits
        slot = int(timestamp % (_DAY * p.season_days) * p.season_bins / _DAY) % len(prof)
        k = visits[slot]
        if k >= p.season_min:
            s_sea = self._sea.update(x - prof[slot])
        if k == 0:
            prof[slot] = x
        else:
            prof[slot] += p.season_alpha * (x - prof[slot])
        if k < 65535:
            visits[slot] = k + 1
        self._n = n + 1
        if n < p.warmup:
            return 0.0
        score = p.level_weight * s_lev
        s_val *= p.val_weight
        if s_val > score:
            score = s_val
        s_sea *= p.season_weight
        if s_sea > score:
            score = s_sea
        if score > 1.0:
            score = 1.0
        # One incident, one alarm: only a score above everything in the last `rest` points is reported.
        # Saturated scores (1.0) therefore report once and stay quiet while the incident lasts.
        prior = self._recent.push(score)
        return score if score > prior else 0.0

    def score_many(self, points: Sequence[tuple[float, float]]) -> list[float]:
        """Batch path: same results as calling score_one in a loop (the state is sequential)."""
        f = self.score_one
        return [f(t, v) for t, v in points]

    def to_state(self) -> bytes:
        """Compact deterministic checkpoint (native byte order, i.e. little-endian on x86/ARM), ~2.5 KB."""
        head = _HEAD.pack(_VERSION, _fingerprint(self.p), self._n, self._vmin, self._vmax, self._origin,
                          self._width)
        return b"".join((head, self._levels.pack(), self._lev.pack(), self._val.pack(), self._sea.pack(),
                         self._recent.pack(), self._prof.tobytes(), self._visits.tobytes()))

    @classmethod
    def from_state(cls, data: bytes, params: DetectorParams | None = None) -> SeriesDetector:
        det = cls(params)
        ver, fp, det._n, det._vmin, det._vmax, det._origin, det._width = _HEAD.unpack_from(data, 0)
        if ver != _VERSION or fp != _fingerprint(det.p):
            raise ValueError("checkpoint was written by another detector version or other parameters")
        off = _HEAD.size
        for part in (det._levels, det._lev, det._val, det._sea, det._recent):
            off = part.unpack(data, off)
        for name in ("_prof", "_visits"):
            old = getattr(det, name)
            new = array(old.typecode)
            end = off + old.itemsize * len(old)
            new.frombytes(data[off:end])
            if len(new) != len(old):
                raise ValueError("truncated detector checkpoint")
            setattr(det, name, new)
            off = end
        if off != len(data):
            raise ValueError("detector checkpoint has trailing bytes")
        return det


def score_series(rows: Iterable[tuple[float, float]], params: DetectorParams | None = None) -> list[float]:
    """Replay path (`kaizen score`): one fresh detector over the rows, in order."""
    det = SeriesDetector(params)
    f = det.score_one
    return [f(t, v) for t, v in rows]
