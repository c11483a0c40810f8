"""Windowed duplicate detection by event id: time buckets of 64-bit id hashes, folded from deltas."""

from __future__ import annotations

import hashlib
from typing import Any


def id_hash(event_id: str) -> int:
    """A stable 63-bit hash (Python's hash() is salted per process, so it cannot be changelogged)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") >> 1


class DedupWindow:
    """Ids seen within `window_seconds`, kept in buckets so expiry is cheap.

    An id counts as seen while the bucket it was recorded in overlaps the window
    (granularity: one bucket, a thirtieth of the window).
    """

    __slots__ = ("window", "bucket", "buckets")

    def __init__(self, window_seconds: float) -> None:
        self.window = float(window_seconds)
        self.bucket = max(1.0, self.window / 30.0)
        self.buckets: dict[int, set[int]] = {}

    def _expire(self, now: float) -> None:
        oldest = int((now - self.window) // self.bucket)
        for b in [b for b in self.buckets if b < oldest]:
            del self.buckets[b]

    def seen(self, h: int, now: float) -> bool:
        oldest = int((now - self.window) // self.bucket)
        return any(h in ids for b, ids in self.buckets.items() if b >= oldest)

    def add(self, hashes: list[int], now: float) -> None:
        self._expire(now)
        self.buckets.setdefault(int(now // self.bucket), set()).update(hashes)

    def filter_new(self, hashes: list[int], now: float) -> list[bool]:
        """For each hash: True if it is new (not seen in the window, nor earlier in this batch)."""
        self._expire(now)
        live = list(self.buckets.values())
        out: list[bool] = []
        batch: set[int] = set()
        for h in hashes:
            dup = h in batch or any(h in ids for ids in live)
            out.append(not dup)
            batch.add(h)
        return out

    def size(self) -> int:
        return sum(len(v) for v in self.buckets.values())


def dedup_delta(hashes: list[int], now: float) -> dict[str, Any]:
    return {"t": now, "h": hashes}


def make_window_factory(window_seconds: float):  # type: ignore[no-untyped-def]
    def init() -> DedupWindow:
        return DedupWindow(window_seconds)

    return init


def apply_dedup_delta(window: DedupWindow, delta: dict[str, Any]) -> None:
    window.add(list(delta["h"]), float(delta["t"]))
