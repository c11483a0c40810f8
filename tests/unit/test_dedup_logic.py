"""Unit tests of the windowed duplicate detection (agents/ingest/logic/dedup.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.ingest.logic.dedup import (
    DedupWindow,
    apply_dedup_delta,
    dedup_delta,
    id_hash,
    id_hashes,
    make_window_factory,
)


def test_id_hash_is_stable_and_fits_63_bits() -> None:
    assert id_hash("m-abc") == id_hash("m-abc")
    assert id_hash("m-abc") != id_hash("m-abd")
    hs = [id_hash(f"e-{i}") for i in range(1000)]
    assert all(0 <= h < 2**63 for h in hs)
    assert len(set(hs)) == 1000
    # Not Python's salted hash(): a known value stays the same across processes.
    assert id_hash("") == int.from_bytes(bytes.fromhex("e4a6a0577479b2b4"), "big") >> 1


def test_a_derived_metric_id_is_its_own_hash() -> None:
    from streams.records import metric_event_id
    eid = metric_event_id("t|ns|Latency|Average|service=a", 1_700_000_000.0, 12.5)
    assert len(eid) == 26 and eid.startswith("m-")
    assert id_hash(eid) == int(eid[2:18], 16) >> 1
    # Look-alikes that are no hex are hashed, and every hash fits 63 bits.
    for odd in ("m-" + "z" * 24, "m-+123456789abcdef01234567", "m- 123456789abcdef01234567", "m-1_23456789abcdef0123456"):
        assert id_hash(odd) == int.from_bytes(__import__("hashlib").blake2b(odd.encode(), digest_size=8).digest(),
                                              "big") >> 1


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_every_id_hashes_into_63_bits(eid: str) -> None:
    assert 0 <= id_hash(eid) < 2**63


def test_filter_new_flags_duplicates_inside_the_batch_and_the_window() -> None:
    w = DedupWindow(300)
    a, b, c = id_hash("a"), id_hash("b"), id_hash("c")
    assert w.filter_new([a, b, a], now=1000.0) == [True, True, False]
    w.add([a, b], now=1000.0)
    assert w.filter_new([a, c, c], now=1100.0) == [False, True, False]
    assert w.seen(a, 1100.0) and not w.seen(c, 1100.0)
    assert w.size() == 2


def test_ids_expire_after_the_window() -> None:
    w = DedupWindow(300)  # buckets of 10 s
    h = id_hash("x")
    w.add([h], now=1000.0)
    assert w.seen(h, 1000.0 + 295)
    assert not w.seen(h, 1000.0 + 300 + w.bucket + 1)
    assert w.filter_new([h], now=1000.0 + 300 + w.bucket + 1) == [True]
    assert w.size() == 0, "expired buckets are dropped, so the state stays bounded"


def test_bucket_is_a_thirtieth_of_the_window_but_at_least_one_second() -> None:
    assert DedupWindow(300).bucket == 10.0
    assert DedupWindow(6).bucket == 1.0


def test_window_rebuilt_from_deltas_equals_the_live_one() -> None:
    live = DedupWindow(60)
    deltas = []
    for t in range(0, 200, 7):
        hs = [id_hash(f"{t}-{i}") for i in range(3)]
        live.add(hs, float(t))
        deltas.append(dedup_delta(hs, float(t)))
    rebuilt = make_window_factory(60)()
    for d in deltas:
        apply_dedup_delta(rebuilt, d)
    assert rebuilt.entries() == live.entries() and rebuilt.size() == live.size()
    probe = [id_hash(f"{t}-1") for t in range(0, 200, 7)] + [id_hash("never")]
    assert rebuilt.filter_new(probe, 200.0) == live.filter_new(probe, 200.0)
    assert rebuilt.filter_new([id_hash("196-0")], 200.0) == [False]


class _ReferenceWindow:
    """The window as first written (one id at a time), for the fast paths of DedupWindow to match."""

    def __init__(self, window_seconds: float) -> None:
        self.window = float(window_seconds)
        self.bucket = max(1.0, self.window / 30.0)
        self.buckets: dict[int, set[int]] = {}
        self.latest: dict[int, int] = {}

    def _expire(self, now: float) -> None:
        oldest = int((now - self.window) // self.bucket)
        for b in [b for b in self.buckets if b < oldest]:
            for h in self.buckets.pop(b):
                if self.latest.get(h) == b:
                    del self.latest[h]

    def add(self, hashes: list[int], now: float) -> None:
        self._expire(now)
        b = int(now // self.bucket)
        self.buckets.setdefault(b, set()).update(hashes)
        for h in hashes:
            if self.latest.get(h, b) <= b:
                self.latest[h] = b

    def filter_new(self, hashes: list[int], now: float) -> list[bool]:
        self._expire(now)
        out, batch = [], set()
        for h in hashes:
            out.append(h not in self.latest and h not in batch)
            batch.add(h)
        return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 40), max_size=12), st.integers(0, 2000)),
                max_size=30))
def test_window_fast_paths_match_the_reference(ops: list[tuple[bool, list[int], int]]) -> None:
    """Batches all new or not, ids repeated in a batch, times going back (replayed older deltas)."""
    fast, ref = DedupWindow(300.0), _ReferenceWindow(300.0)
    for is_add, hashes, now in ops:
        if is_add:
            fast.add(hashes, float(now))
            ref.add(hashes, float(now))
        else:
            assert fast.filter_new(hashes, float(now)) == ref.filter_new(hashes, float(now))
        assert fast.entries() == ref.latest, "the same ids, each at its newest bucket"
        assert fast.size() == len(ref.latest)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["random", "clustered", "few"]))
def test_window_matches_the_reference_while_it_grows_expires_and_shrinks(seed: int, kind: str) -> None:
    """Thousands of ids: the table grows past its first size, rebuilds as buckets expire, and shrinks; ids
    chosen to share their low or high bits (a producer may pick the hash of an id of the derived form)
    are found as well as random ones."""
    import random
    rng = random.Random(seed)
    fast, ref = DedupWindow(60.0), _ReferenceWindow(60.0)   # buckets of 2 s
    pool = {"random": lambda: rng.getrandbits(63), "clustered": lambda: rng.getrandbits(20) << 43,
            "few": lambda: rng.randrange(3000)}[kind]
    now = 1_000.0
    for _ in range(60):
        now += rng.choice([0.5, 1.0, 3.0, 30.0, -5.0])
        hashes = [pool() for _ in range(rng.choice([0, 1, 50, 400]))]
        if rng.random() < 0.5:
            fast.add(hashes, now)
            ref.add(hashes, now)
        else:
            assert fast.filter_new(hashes, now) == ref.filter_new(hashes, now)
        assert fast.size() == len(ref.latest)
    assert fast.entries() == ref.latest


def test_hashes_out_of_63_bits_are_refused() -> None:
    w = DedupWindow(300)
    with pytest.raises(ValueError):
        w.add([-1], 0.0)
    with pytest.raises(OverflowError):
        w.filter_new([2**64], 0.0)


_derived_like = st.builds(lambda head, tail: "m-" + head + tail,
                          st.text(alphabet="0123456789abcdefABCDEF \t_+-g", min_size=16, max_size=16),
                          st.text(alphabet="0123456789abcdef", min_size=8, max_size=8))


@given(st.lists(st.one_of(_derived_like, st.text(max_size=30)), max_size=40))
@settings(max_examples=400, deadline=None)
def test_id_hashes_of_a_message_equal_each_id_hash(ids: list[str]) -> None:
    assert id_hashes(ids) == [id_hash(e) for e in ids]


@given(st.lists(_derived_like, min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_id_hashes_of_derived_looking_ids_equal_each_id_hash(ids: list[str]) -> None:
    assert id_hashes(ids) == [id_hash(e) for e in ids]


def test_id_hashes_never_take_whitespace_for_hex_digits() -> None:
    tail = "0" * 8
    spaced = ["m-0011223344556677" + tail, "m-" + " " * 16 + tail]           # fromhex skips the spaces
    assert id_hashes(spaced) == [id_hash(e) for e in spaced]
    pairs = ["m-00 11 22 33 44 55" + "66" + tail[:7], "m-0011223344556677" + tail]
    assert id_hashes(pairs) == [id_hash(e) for e in pairs]
