"""Unit tests of the windowed duplicate detection (agents/ingest/logic/dedup.py)."""

from __future__ import annotations

from agents.ingest.logic.dedup import (
    DedupWindow,
    apply_dedup_delta,
    dedup_delta,
    id_hash,
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
    assert rebuilt.buckets == live.buckets
    probe = [id_hash(f"{t}-1") for t in range(0, 200, 7)] + [id_hash("never")]
    assert rebuilt.filter_new(probe, 200.0) == live.filter_new(probe, 200.0)
    assert rebuilt.filter_new([id_hash("196-0")], 200.0) == [False]
