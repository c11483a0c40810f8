"""kaizen's per-series anomaly detector, a River AnomalyDetector: three cheap signals, likelihood, calibration."""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

from river import base as river_base

from agents.scoring.logic.calibration import ScoreCalibrator
from agents.scoring.logic.detector_parts import Likelihood, PatternCounter

__all__ = ["ANOMALY_THRESHOLD", "DEFAULT_PARAMS", "DetectorParams", "KaizenDetector", "point_of", "score_series"]

_DAY = 86400.0
_HUGE = 1e100

# The design (signals, likelihoods, suppression) is described in docs/detection.md, with the
# leave-one-corpus-out protocol that chose the parameters below and the figures it gave.


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """All tuned parameters (one set for every series); chosen by the protocol of docs/detection.md."""

    warmup: int = 20               # points scored 0 while the statistics settle (see docs/detection.md)
    grid_at: int = 300             # the value grid (origin, bin width) is frozen after this many points
    bins: int = 8                  # the range seen until then is split into this many bins
    table_bits: int = 9            # the level-count table has 2**bits uint16 counters
    level_weight: float = 1.0      # signal 1: value in a rarely seen level (bin count)
    adjacent: float = 0.5          # ... novelty of a never-seen bin next to a seen one (1 = as novel as any)
    lev_min_sd: float = 0.0        # ... floor of the level likelihood's spread
    short_win: int = 5             # ... its likelihood's short window
    long_alpha: float = 0.002      # ... EW rate of its long-run distribution
    val_weight: float = 1.0        # signal 2: short mean of values far from their long-run distribution
    val_short: int = 3             # ... short window (also used by signal 3)
    val_alpha: float = 0.0005      # ... EW rate of the long-run distribution (also used by signal 3)
    season_weight: float = 1.0     # signal 3: value far from its usual level at this time of day
    season_bins: int = 24          # ... time-of-day slots of the daily profile
    season_days: int = 1           # ... profile period in days (7: weekly profile, slots per day unchanged)
    season_alpha: float = 0.1      # ... EW rate of each slot's level per day: a visit moves it by this times
                                   #     (interval since the last point / slot length), at most this, and
                                   #     at least 1/visits (a slot's first visits: their plain mean)
    season_min: int = 3            # ... visits of a slot before its residual is scored
    season_after: float = 2.0      # ... and days since the series' first point: before, a slot's "profile" is
                                   #     the mean of a few points of this hour today, not a daily level.
                                   #     Once the residual's likelihood may score (after `quiet` residuals), it
                                   #     replaces signal 2: the value against one level for all hours is the
                                   #     coarser test of the same value (docs/detection.md)
    quiet: int = 20                # updates of each likelihood before it may score (its distribution settles)
    decades: float = 8.0           # a tail probability of 10**-decades maps to score 1 (log scale)
    rest: int = 100                # report a score only if it beats every score of the last `rest` points


DEFAULT_PARAMS = DetectorParams()
# Score at or above which the live agent emits an insight (calibrated scores; chosen by the protocol: the
# in-sample threshold and five folds' of six are 1.0 (realKnownCause's 0.993), a tail probability of
# 10**-decades or less on some signal).
ANOMALY_THRESHOLD: float = 1.0

_VERSION = 4
_HEAD = struct.Struct("<B8sIdddddd")


@functools.lru_cache(maxsize=64)
def _fingerprint(p: DetectorParams) -> bytes:
    """Short digest of the parameters, so a checkpoint is never restored under different parameters."""
    return hashlib.blake2b(repr(astuple(p)).encode(), digest_size=8).digest()


def point_of(x: Mapping[Any, Any], n: int) -> tuple[float, float]:
    """(timestamp, value) of a River feature dict: `value` (or its only numeric feature) and `timestamp`
    (epoch seconds or datetime; without one, point n is taken as n minutes after the first)."""
    v = x.get("value")
    if v is None:
        nums = [u for k, u in x.items() if k != "timestamp" and isinstance(u, int | float)]
        if len(nums) != 1:
            raise ValueError("kaizen's detector needs x['value'] (or exactly one numeric feature)")
        v = nums[0]
    t = x.get("timestamp")
    ts = t.timestamp() if isinstance(t, datetime) else 60.0 * n if t is None else float(t)
    return ts, float(v)


class KaizenDetector(river_base.AnomalyDetector):
    """Scores one metric series; a River anomaly detector (`learn_one(x)`, `score_one(x)`, `clone()`,
    picklable) over x = {"value": v, "timestamp": epoch seconds}. Scores are in [0, 1].

    Three cheap signals, each turned into an anomaly likelihood (short mean against its own long-run
    distribution, Gaussian tail, log scale) so they are comparable across series and with each other:
      1. level rarity: how rarely the value's bin (on a grid frozen early) has been seen;
      2. windowed Gaussian on the value itself;
      3. the residual from a daily time-of-day profile (catches "right value, wrong time"); once it may
         score, it replaces signal 2 (one test of the value, against the finer of the two models).
    The strongest of them is calibrated against the series' own score history and reported only when it
    beats every score of the last `rest` points (calibration.py). `score_learn(ts, value)` does both
    steps at once: the live agent's and `kaizen score`'s path, equal to score_one then learn_one.
    """

    __slots__ = ("params", "_n", "_vmin", "_vmax", "_origin", "_width", "_last_ts", "_levels", "_lev", "_val",
                 "_sea", "_prof", "_visits", "_cal", "_first_ts", "surprise")

    def __init__(self, params: DetectorParams | None = None) -> None:
        p = params or DEFAULT_PARAMS
        self.params = p
        self._n = 0
        self._vmin = math.inf
        self._vmax = -math.inf
        self._origin = 0.0
        self._width = 0.0          # 0 until the grid is frozen
        self._last_ts = -math.inf  # timestamp of the last point learnt (the profile's rate per visit)
        self._first_ts = 0.0       # timestamp of the first point learnt (the profile's age)
        self._levels = PatternCounter(p.table_bits)
        self._lev = Likelihood(p.short_win, p.long_alpha, p.decades, p.quiet, p.lev_min_sd)
        self._val = Likelihood(p.val_short, p.val_alpha, p.decades, p.quiet, two_sided=True)
        self._sea = Likelihood(p.val_short, p.val_alpha, p.decades, p.quiet, two_sided=True)
        self._prof = array("d", bytes(8 * p.season_bins * p.season_days))
        self._visits = array("H", bytes(2 * p.season_bins * p.season_days))
        self._cal = ScoreCalibrator(p.rest)
        self.surprise = 0.0        # the last point's likelihood before the one-alarm-per-incident rule

    @property
    def n_seen(self) -> int:
        return self._n

    # --- River API -------------------------------------------------------------------------------
    def learn_one(self, x: Mapping[Any, Any]) -> None:
        self.score_learn(*point_of(x, self._n))

    def score_one(self, x: Mapping[Any, Any]) -> float:
        """The score `x` would get, learning nothing."""
        ts, v = point_of(x, self._n)
        if not -_HUGE < v < _HUGE or self._n < self.params.warmup:
            return 0.0
        return self._cal.peek(self._signals(ts, v, False))

    # --- fused path ------------------------------------------------------------------------------
    def score_learn(self, timestamp: float, value: float) -> float:
        """Score `value` against what was learnt so far, then learn it. `timestamp` is epoch seconds."""
        x = float(value)
        if not -_HUGE < x < _HUGE:
            # NaN/inf is a gap, not evidence; absurd magnitudes would overflow the squared statistics
            # and poison the state forever. Either way the point is skipped and the state left untouched.
            return 0.0
        # The hot path: _signals(learn=True) written out, as it runs once per point of every series (the
        # pure score_one path shares _signals; tests/unit/test_detectors.py checks the two agree).
        p = self.params
        n = self._n
        if x < self._vmin:
            self._vmin = x
        if x > self._vmax:
            self._vmax = x
        if self._width == 0.0 and n + 1 >= p.grid_at:
            w = (self._vmax - self._vmin) / p.bins
            self._width = w if w > 0.0 else max(abs(x) * 1e-3, 1e-9)
            self._origin = self._vmin
        s_lev = 0.0
        if self._width > 0.0:
            s_lev = self._lev.update(self._levels.novelty(math.floor((x - self._origin) / self._width), p.adjacent))
        s_val = self._val.update(x)
        s_sea = 0.0
        prof, visits = self._prof, self._visits
        slot = int(timestamp % (_DAY * p.season_days) * p.season_bins / _DAY) % len(prof)
        k = visits[slot]
        if n == 0:
            self._first_ts = timestamp
        if k >= p.season_min and timestamp - self._first_ts >= p.season_after * _DAY:
            if self._sea.n >= p.quiet:
                s_val = 0.0  # the residual, once it may score, replaces the value signal (which still learns)
            s_sea = self._sea.update(x - prof[slot])
        dt = timestamp - self._last_ts
        self._last_ts = timestamp
        if k == 0:
            prof[slot] = x
        elif dt > 0.0:
            a = p.season_alpha
            slot_s = _DAY / p.season_bins
            if dt < slot_s:
                a = a * dt / slot_s
            if a < 1.0 / (k + 1):
                a = 1.0 / (k + 1)  # the slot's first visits: a plain mean, not its first value
            prof[slot] += a * (x - prof[slot])
        if k < 65535:
            visits[slot] = k + 1
        self._n = n + 1
        if n < p.warmup:
            self.surprise = 1.0    # no opinion yet: the trend rules alone decide (trends.py)
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
        self.surprise = score
        prior = self._cal.recent.push(score)   # ScoreCalibrator.step, inlined
        return score if score > prior else 0.0

    def score_many(self, points: Sequence[tuple[float, float]]) -> list[float]:
        """Batch path: same results as calling score_learn in a loop (the state is sequential)."""
        f = self.score_learn
        return [f(t, v) for t, v in points]

    def _signals(self, timestamp: float, x: float, learn: bool) -> float:
        """The strongest of the three signals' likelihoods (learning the point when `learn`)."""
        p = self.params
        n = self._n
        vmin = x if x < self._vmin else self._vmin
        vmax = x if x > self._vmax else self._vmax
        width, origin = self._width, self._origin
        if width == 0.0 and n + 1 >= p.grid_at:
            # Freeze the grid once so bin ids stay comparable forever; values outside the early range
            # get bin ids never seen before, which is exactly the novelty we want to notice.
            w = (vmax - vmin) / p.bins
            width = w if w > 0.0 else max(abs(x) * 1e-3, 1e-9)
            origin = vmin
        s_lev = 0.0
        prof, visits = self._prof, self._visits
        slot = int(timestamp % (_DAY * p.season_days) * p.season_bins / _DAY) % len(prof)
        k = visits[slot]
        first = timestamp if n == 0 else self._first_ts
        profiled = k >= p.season_min and timestamp - first >= p.season_after * _DAY
        if learn:
            self._first_ts = first
            self._vmin, self._vmax, self._width, self._origin = vmin, vmax, width, origin
            if width > 0.0:
                s_lev = self._lev.update(self._levels.novelty(math.floor((x - origin) / width), p.adjacent))
            s_val = self._val.update(x)
            s_sea = 0.0
            if profiled:
                if self._sea.n >= p.quiet:
                    s_val = 0.0
                s_sea = self._sea.update(x - prof[slot])
            dt = timestamp - self._last_ts
            self._last_ts = timestamp
            if k == 0:
                prof[slot] = x
            elif dt > 0.0:
                a = p.season_alpha
                slot_s = _DAY / p.season_bins
                if dt < slot_s:
                    a = a * dt / slot_s
                if a < 1.0 / (k + 1):
                    a = 1.0 / (k + 1)
                prof[slot] += a * (x - prof[slot])
            if k < 65535:
                visits[slot] = k + 1
            self._n = n + 1
        else:
            if width > 0.0:
                s_lev = self._lev.peek(self._levels.peek(math.floor((x - origin) / width), p.adjacent))
            s_val = self._val.peek(x)
            s_sea = 0.0
            if profiled:
                if self._sea.n >= p.quiet:
                    s_val = 0.0
                s_sea = self._sea.peek(x - prof[slot])
        score = p.level_weight * s_lev
        s_val *= p.val_weight
        if s_val > score:
            score = s_val
        s_sea *= p.season_weight
        if s_sea > score:
            score = s_sea
        return 1.0 if score > 1.0 else score

    # --- checkpoints -----------------------------------------------------------------------------
    def to_state(self) -> bytes:
        """Compact deterministic checkpoint (native byte order, i.e. little-endian on x86/ARM), ~2 KB."""
        head = _HEAD.pack(_VERSION, _fingerprint(self.params), self._n, self._vmin, self._vmax, self._origin,
                          self._width, self._last_ts, self._first_ts)
        return b"".join((head, self._levels.pack(), self._lev.pack(), self._val.pack(), self._sea.pack(),
                         self._cal.pack(), self._prof.tobytes(), self._visits.tobytes()))

    @classmethod
    def from_state(cls, data: bytes, params: DetectorParams | None = None) -> KaizenDetector:
        det = cls(params)
        (ver, fp, det._n, det._vmin, det._vmax, det._origin, det._width, det._last_ts,
         det._first_ts) = _HEAD.unpack_from(data, 0)
        if ver != _VERSION or fp != _fingerprint(det.params):
            raise ValueError("checkpoint was written by another detector version or other parameters")
        off = _HEAD.size
        for part in (det._levels, det._lev, det._val, det._sea, det._cal):
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

    def __getstate__(self) -> tuple[DetectorParams, bytes]:
        return self.params, self.to_state()

    def __setstate__(self, state: tuple[DetectorParams, bytes]) -> None:
        params, data = state
        restored = KaizenDetector.from_state(data, params)
        for name in self.__slots__:
            setattr(self, name, getattr(restored, name))


def score_series(rows: Iterable[tuple[float, float]], params: DetectorParams | None = None) -> list[float]:
    """One fresh detector over the rows, in order (as `kaizen score` does with the default detector)."""
    det = KaizenDetector(params)
    f = det.score_learn
    return [f(t, v) for t, v in rows]
