"""An open-addressing table of 63-bit id hashes → the newest time bucket each was recorded in (numba).

The dedup window's store (dedup.py). It replaced a dict of Python ints plus a set per bucket, which cost
≈ 137 bytes and ≈ 0.8 µs a point (lookups, inserts and the per-bucket sets); here an id is 16 bytes a
slot at most 60 % full (27–53 bytes an id) and a batch is looked up or inserted in one compiled loop.

Linear probing over int64 arrays: `keys` (EMPTY where free; an id hash is ≥ 0) and `vals` (its bucket).
A slot is chosen from the high bits of the hash times a random odd multiplier drawn per table, so ids
someone chose to collide (a producer may give ids of the derived form, whose hash is read from the id
itself) collide only by chance. Entries are removed by rebuilding the table without them (`rebuild`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["EMPTY", "count_from", "filter_new", "insert", "rebuild"]

EMPTY = -1


@njit(cache=True)
def _find(keys: np.ndarray, h: int, mult: np.uint64, shift: np.uint64) -> int:
    """The slot holding `h`, or the free slot where it would go."""
    mask = np.uint64(keys.shape[0] - 1)   # (all in uint64: mixed with int64, numba would go to float64)
    one = np.uint64(1)
    i = (np.uint64(h) * mult) >> shift
    while True:
        k = keys[i]
        if k == h or k == EMPTY:
            return np.int64(i)  # type: ignore[return-value]
        i = (i + one) & mask


@njit(cache=True)
def filter_new(keys: np.ndarray, vals: np.ndarray, mult: np.uint64, shift: np.uint64, hashes: np.ndarray,
               oldest: int, scratch: np.ndarray, scratch_shift: np.uint64, out: np.ndarray) -> None:
    """out[j] = hashes[j] is not in the table at a bucket >= oldest, nor earlier in `hashes`. `scratch`
    (all EMPTY, a power of two at least twice len(hashes)) holds the batch's ids."""
    for j in range(hashes.shape[0]):
        h = hashes[j]
        i = _find(keys, h, mult, shift)
        if keys[i] == h and vals[i] >= oldest:
            out[j] = False
            continue
        s = _find(scratch, h, mult, scratch_shift)
        if scratch[s] == h:
            out[j] = False
        else:
            scratch[s] = h
            out[j] = True


@njit(cache=True)
def insert(keys: np.ndarray, vals: np.ndarray, mult: np.uint64, shift: np.uint64, hashes: np.ndarray,
           bucket: int) -> int:
    """Record each hash at `bucket`, or keep its newer bucket (a replayed older delta must not move an id
    back in time). Returns how many were new to the table (the caller keeps it under 60 % full)."""
    added = 0
    for j in range(hashes.shape[0]):
        h = hashes[j]
        i = _find(keys, h, mult, shift)
        if keys[i] == h:
            if vals[i] < bucket:
                vals[i] = bucket
        else:
            keys[i] = h
            vals[i] = bucket
            added += 1
    return added


@njit(cache=True)
def count_from(keys: np.ndarray, vals: np.ndarray, oldest: int) -> int:
    """How many entries are at a bucket >= oldest."""
    n = 0
    for i in range(keys.shape[0]):
        if keys[i] != EMPTY and vals[i] >= oldest:
            n += 1
    return n


@njit(cache=True)
def rebuild(keys: np.ndarray, vals: np.ndarray, new_keys: np.ndarray, new_vals: np.ndarray, mult: np.uint64,
            shift: np.uint64, oldest: int) -> int:
    """Copy the entries at a bucket >= oldest into the (empty) new arrays; returns their lowest bucket
    (the largest int64 when none is copied)."""
    lo = np.iinfo(np.int64).max
    for i in range(keys.shape[0]):
        h = keys[i]
        if h != EMPTY and vals[i] >= oldest:
            j = _find(new_keys, h, mult, shift)
            new_keys[j] = h
            new_vals[j] = vals[i]
            if vals[i] < lo:
                lo = vals[i]
    return lo
