"""Windowed duplicate detection by event id: 63-bit id hashes and the time bucket each was last seen in,
folded from deltas."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from agents.ingest.logic import id_table


def id_hash(event_id: str) -> int:
    """A stable 63-bit hash (Python's hash() is salted per process, so it cannot be changelogged).

    A derived metric id ("m-" and 24 hex digits of a blake2b digest, streams.records.metric_event_id) is
    a hash already: its first 16 hex digits are taken as they are, which spares hashing every point a
    second time (~0.4 µs a point on the metric path). Any other id is hashed."""
    if len(event_id) == 26 and event_id.startswith("m-"):
        head = event_id[2:18]
        if head.isalnum():  # (int() would also take signs, spaces and underscores)
            try:
                return int(head, 16) >> 1
            except ValueError:  # letters beyond f: not a derived id
                pass
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


_HEAD_DIGITS = itemgetter(slice(2, 18))  # a derived id's first 16 hex digits


def id_hashes(event_ids: list[str]) -> list[int]:
    """[id_hash(e) for e in event_ids], for a whole message at once when every id is a derived one: their
    16-digit heads joined and read as big-endian 64-bit integers by numpy (~0.05 µs an id instead of
    ~0.3). bytes.fromhex skips whitespace, so any character that is no hex digit either raises or makes
    the result short: then (and for any other id) each is hashed by id_hash."""
    n = len(event_ids)
    # (the checks and the join in C over the whole list: a generator step per id cost as much as the rest)
    if n and set(map(len, event_ids)) == {26} and all(map(str.startswith, event_ids, repeat("m-"))):
        try:
            raw = bytes.fromhex("".join(map(_HEAD_DIGITS, event_ids)))
        except ValueError:
            raw = b""
        if len(raw) == 8 * n:
            return (np.frombuffer(raw, dtype=">u8") >> np.uint64(1)).tolist()
    return [id_hash(e) for e in event_ids]


_MIN_SLOTS = 1024
_MAX_LOAD = 0.6   # linear probing stays short below this fill
_NONE = np.iinfo(np.int64).max


def _as_hashes(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(hashes, dtype=np.int64)   # (an int past 63 bits raises OverflowError here)
    if arr.ndim != 1 or (arr.size and int(arr.min()) < 0):
        raise ValueError("id hashes are non-negative 63-bit integers (id_hash)")
    return arr


def _slots_for(n: int) -> int:
    slots = _MIN_SLOTS
    while n > _MAX_LOAD * slots:
        slots *= 2
    return slots


class DedupWindow:
    """Ids seen within `window_seconds`, each with the newest time bucket it was recorded in (a thirtieth
    of the window, at least 1 s): an id counts as seen while that bucket overlaps the window.

    The ids live in an open-addressing table of int64 arrays (id_table.py, compiled): ≈ 27–53 bytes an
    id. Every call first drops the ids whose newest bucket has left the window as of its `now` (a rebuild
    of the table, once per bucket that expires, which also shrinks it), so the state stays bounded and
    the answers are those of the per-id window the tests keep as a reference.
    """

    __slots__ = ("window", "bucket", "_keys", "_vals", "_shift", "_mult", "_n", "_lowest")

    def __init__(self, window_seconds: float) -> None:
        self.window = float(window_seconds)
        self.bucket = max(1.0, self.window / 30.0)
        self._mult = np.uint64(secrets.randbits(64) | 1)   # per table: chosen collisions stay chance ones
        self._alloc(_MIN_SLOTS)
        self._n = 0
        self._lowest = _NONE   # the lowest bucket of any id held

    def _alloc(self, slots: int) -> None:
        self._keys = np.full(slots, id_table.EMPTY, np.int64)
        self._vals = np.zeros(slots, np.int64)
        self._shift = np.uint64(65 - slots.bit_length())   # 64 - log2(slots): the hash's top bits

    def _oldest(self, now: float) -> int:
        return int((now - self.window) // self.bucket)

    def _expire(self, now: float, room: int = 0) -> int:
        """Drop the ids whose newest bucket is older than the window at `now`, and make room for `room`
        more; returns the oldest bucket still in the window."""
        oldest = self._oldest(now)
        if oldest <= self._lowest and self._n + room <= _MAX_LOAD * len(self._keys):
            return oldest
        keys, vals = self._keys, self._vals
        keep = id_table.count_from(keys, vals, oldest)
        self._alloc(_slots_for(keep + room))
        self._lowest = id_table.rebuild(keys, vals, self._keys, self._vals, self._mult, self._shift, oldest)
        self._n = keep
        return oldest

    def seen(self, h: int, now: float) -> bool:
        return self.filter_new([h], now) == [False]

    def add(self, hashes: Sequence[int] | np.ndarray, now: float) -> None:
        arr = _as_hashes(hashes)
        self._expire(now, room=len(arr))
        if not len(arr):
            return
        b = int(now // self.bucket)
        self._n += id_table.insert(self._keys, self._vals, self._mult, self._shift, arr, b)
        if b < self._lowest:
            self._lowest = b

    def filter_new(self, hashes: Sequence[int] | np.ndarray, now: float) -> list[bool]:
        """For each hash: True if it is new (not seen in the window, nor earlier in this batch)."""
        arr = _as_hashes(hashes)
        oldest = self._expire(now)
        scratch_slots = 8
        while scratch_slots < 2 * len(arr):
            scratch_slots *= 2
        scratch = np.full(scratch_slots, id_table.EMPTY, np.int64)
        out = np.empty(len(arr), np.bool_)
        id_table.filter_new(self._keys, self._vals, self._mult, self._shift, arr, oldest, scratch,
                            np.uint64(65 - scratch_slots.bit_length()), out)
        return out.tolist()  # type: ignore[no-any-return]

    def size(self) -> int:
        """How many ids the window holds (as of the last call's time)."""
        return self._n

    def entries(self) -> dict[int, int]:
        """Each id hash held, with its newest bucket (for tests and inspection)."""
        held = self._keys != id_table.EMPTY
        return dict(zip(self._keys[held].tolist(), self._vals[held].tolist(), strict=True))


def warm() -> None:
    """Load the table's compiled loops (id_table.py; compiled once per machine, then ≈ 0.3 s to load) before
    the first message, so none waits for them."""
    w = DedupWindow(60.0)
    w.filter_new([1, 2, 2], 0.0)
    w.add([1, 2], 0.0)
    w.add([3], 120.0)


def dedup_delta(hashes: list[int], now: float) -> dict[str, Any]:
    return {"t": now, "h": hashes}


def make_window_factory(window_seconds: float):  # type: ignore[no-untyped-def]
    def init() -> DedupWindow:
        return DedupWindow(window_seconds)

    return init


def apply_dedup_delta(window: DedupWindow, delta: dict[str, Any]) -> None:
    window.add(list(delta["h"]), float(delta["t"]))
