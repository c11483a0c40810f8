"""Per-series online anomaly detector: cheap signals, anomaly likelihood, alarm suppression."""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["ANOMALY_THRESHOLD", "DetectorParams", "SeriesDetector", "score_series"]

_LOG_EPS = math.log(1e-10)


@dataclass(frozen=True, slots=True)
class DetectorParams:
    """All tuned parameters; defaults are the values tuned on NAB (one set for every series)."""

    warmup: int = 150              # points scored 0 while the statistics settle
    bins: int = 24                 # quantisation grid: initial range split into this many bins
    grid_at: int = 100             # the grid (origin, width) is frozen after this many points
    table_bits: int = 10           # hashed subsequence-count table of 2**bits uint16 cells
    novel_weight: float = 1.0      # weight of the "novel subsequence" signal in the raw score
    change_weight: float = 1.0     # weight of the normalised prediction-error signal
    short_win: int = 10            # short mean of raw scores (anomaly likelihood numerator)
    long_alpha: float = 0.002      # EW rate of the long raw-score distribution
    val_short: int = 5             # short mean of values for the value-level likelihood
    val_alpha: float = 0.005       # EW rate of the long value distribution
    val_weight: float = 1.0        # 0 disables the value-level likelihood
    suppress: int = 200            # points muted after an alarm so one incident gives one alarm
    alarm: float = 0.5             # internal alarm level that starts the suppression
    rest: int = 0                  # >0: report a score only if it beats the max of the last `rest` scores
    orders: int = 3                # subsequence orders (1..3) counted in the hashed table


DEFAULT_PARAMS = DetectorParams()
ANOMALY_THRESHOLD: float = 0.5


def _tail(z: float) -> float:
    """One-sided Gaussian tail probability P(Z > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _log_score(p_tail: float) -> float:
    """Map a tail probability to [0, 1] on a log scale (Numenta's log-likelihood trick)."""
    if p_tail <= 1e-10:
        return 1.0
    return min(1.0, max(0.0, math.log(p_tail) / _LOG_EPS))


_HEAD = struct.Struct("<5q13d")  # counters then floats, see to_state


class SeriesDetector:
    """Scores then learns each point of one metric series; score in [0, 1]."""

    __slots__ = (
        "p", "_n", "_vmin", "_vmax", "_origin", "_width", "_b1", "_b2", "_prev",
        "_table", "_raw_ring", "_raw_sum", "_lm", "_lv", "_val_ring", "_val_sum",
        "_vm", "_vv", "_mute", "_pos", "_vpos", "_dm", "_hist", "_hpos",
    )

    def __init__(self, params: DetectorParams | None = None) -> None:
        p = params or DEFAULT_PARAMS
        self.p = p
        self._n = 0
        self._vmin = math.inf
        self._vmax = -math.inf
        self._origin = 0.0
        self._width = 0.0          # 0 until the grid is frozen
        self._b1 = 0
        self._b2 = 0
        self._prev = 0.0
        self._table = array("H", bytes(2 << p.table_bits))
        self._raw_ring = array("d", bytes(8 * p.short_win))
        self._raw_sum = 0.0
        self._lm = 0.0
        self._lv = 0.0
        self._val_ring = array("d", bytes(8 * p.val_short))
        self._val_sum = 0.0
        self._vm = 0.0
        self._vv = 0.0
        self._dm = 0.0              # EW mean absolute change, scale of the change signal
        self._mute = 0
        self._hist = array("f", bytes(4 * max(p.rest, 1)))
        self._hpos = 0
        self._pos = 0
        self._vpos = 0

    @property
    def n_seen(self) -> int:
        return self._n

    def score_one(self, timestamp: float, value: float) -> float:
        """Score `value` against what was learnt so far, then learn it. `timestamp` is epoch seconds."""
        p = self.p
        x = float(value)
        if not math.isfinite(x):
            return 0.0
        n = self._n
        if x < self._vmin:
            self._vmin = x
        if x > self._vmax:
            self._vmax = x
        span = self._vmax - self._vmin
        # --- grid: frozen once so bin ids stay comparable; values beyond it get new bin ids
        if self._width == 0.0 and n + 1 >= p.grid_at:
            w = span / p.bins
            if w <= 0.0:
                w = max(abs(x) * 1e-3, 1e-9)
            self._width = w
            self._origin = self._vmin
        novel = 0.0
        if self._width > 0.0:
            b = int(math.floor((x - self._origin) / self._width))
            mask = (1 << p.table_bits) - 1
            tab = self._table
            for o, h in enumerate((b * 131071, (self._b1 * 8191) ^ (b * 131071) ^ 0x5bd1,
                                   (self._b2 * 1000003) ^ (self._b1 * 8191) ^ (b * 131071) ^ 0x2f3a)):
                if o >= p.orders:
                    break
                h &= mask
                c = tab[h]
                novel += 1.0 / (1.0 + c)
                if c < 65535:
                    tab[h] = c + 1
            novel /= p.orders
            self._b2 = self._b1
            self._b1 = b
        # --- change signal: |x - prev| against its own EW mean
        d = abs(x - self._prev) if n else 0.0
        self._prev = x
        dm = self._dm
        change = d / (d + 4.0 * dm) if dm > 0.0 else (1.0 if d > 0.0 else 0.0)
        self._dm = dm + 0.01 * (d - dm) if n else 0.0
        raw = (p.novel_weight * novel + p.change_weight * change) / (p.novel_weight + p.change_weight + 1e-12)
        # --- anomaly likelihood of the raw score: short mean against the long distribution
        k = self._pos
        self._raw_sum += raw - self._raw_ring[k]
        self._raw_ring[k] = raw
        self._pos = (k + 1) % p.short_win
        short = self._raw_sum / min(n + 1, p.short_win)
        lm, lv = self._lm, self._lv
        sd = math.sqrt(lv) if lv > 1e-12 else 1e-6
        p_err = _tail((short - lm) / sd)
        a = p.long_alpha if n * p.long_alpha > 1.0 else 1.0 / (n + 1)
        dl = short - lm
        self._lm = lm + a * dl
        self._lv = (1.0 - a) * (lv + a * dl * dl)
        # --- value-level likelihood: short mean of values against the long distribution (two-sided)
        k = self._vpos
        self._val_sum += x - self._val_ring[k]
        self._val_ring[k] = x
        self._vpos = (k + 1) % p.val_short
        vshort = self._val_sum / min(n + 1, p.val_short)
        vm, vv = self._vm, self._vv
        vsd = math.sqrt(vv) if vv > 1e-12 else max(abs(vm) * 1e-3, 1e-9)
        p_val = 2.0 * _tail(abs(vshort - vm) / vsd) if p.val_weight > 0.0 else 1.0
        a = p.val_alpha if n * p.val_alpha > 1.0 else 1.0 / (n + 1)
        dv = x - vm
        self._vm = vm + a * dv
        self._vv = (1.0 - a) * (vv + a * dv * dv)
        self._n = n + 1
        if n < p.warmup:
            return 0.0
        score = max(_log_score(p_err), p.val_weight * _log_score(p_val))
        if p.rest > 0:
            hist = self._hist
            prior = max(hist)
            hist[self._hpos] = score
            self._hpos = (self._hpos + 1) % p.rest
            return score if score > prior else 0.0
        if self._mute > 0:
            self._mute -= 1
            return 0.0
        if score >= p.alarm:
            self._mute = p.suppress
        return score

    def score_many(self, points: Sequence[tuple[float, float]]) -> list[float]:
        """Batch path: same results as calling score_one in a loop."""
        f = self.score_one
        return [f(t, v) for t, v in points]

    def to_state(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_state(cls, data: bytes, params: DetectorParams | None = None) -> SeriesDetector:
        raise NotImplementedError


def score_series(rows: Iterable[tuple[float, float]], params: DetectorParams | None = None) -> list[float]:
    """Replay path (`kaizen score`): one fresh detector over the rows, in order."""
    det = SeriesDetector(params)
    f = det.score_one
    return [f(t, v) for t, v in rows]
