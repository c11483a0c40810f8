"""Changelog deltas split below the message size limit fold to the same state (streams/state.py)."""

from __future__ import annotations

import orjson

from streams.state import kv_apply, split_delta


def test_kv_delta_split_folds_to_the_same_state_deletions_last() -> None:
    delta = {"set": {f"k{i}": "x" * 1000 for i in range(500)} | {"gone": "soon"}, "del": ["k3", "gone"]}
    msgs, big = split_delta(delta, 50_000)
    assert big == [] and len(msgs) > 1 and all(len(m) <= 50_000 for m in msgs)
    split: dict[str, object] = {}
    for m in msgs:
        kv_apply(split, orjson.loads(m))
    whole: dict[str, object] = {}
    kv_apply(whole, delta)
    assert split == whole and "gone" not in split and "k3" not in split


def test_list_delta_split_keeps_scalars_in_every_part() -> None:
    msgs, big = split_delta({"t": 5.0, "h": list(range(200_000))}, 100_000)
    parts = [orjson.loads(m) for m in msgs]
    assert big == [] and all(p["t"] == 5.0 for p in parts) and sum(len(p["h"]) for p in parts) == 200_000


def test_entry_too_large_alone_is_named_not_dropped_silently() -> None:
    msgs, big = split_delta({"set": {"huge": "x" * 2000, "small": "y"}}, 1000)
    assert big == ["huge"] and [orjson.loads(m) for m in msgs] == [{"set": {"small": "y"}}]
