"""Series ownership and hop headers of the one-hop metric path (agents/scoring/logic/hops.py)."""

from __future__ import annotations

import zlib
from typing import Any

from agents.scoring.logic.hops import FORWARDED, HOP_HEADER, hop_of, owner_partition, split_by_owner


def test_owner_is_crc32_of_the_series_key_like_librdkafka() -> None:
    key = "acme|AWS/ApiGateway|Latency|Average|service=checkout"
    assert owner_partition(key, 4) == zlib.crc32(key.encode()) % 4
    assert {owner_partition(f"t|ns|m|Average|s={i}", 4) for i in range(50)} == {0, 1, 2, 3}


def test_split_keeps_order_and_groups_the_others_by_owner() -> None:
    pts: list[dict[str, Any]] = [{"series": f"t|ns|m|Average|s={i}", "i": i} for i in range(40)]
    owned, foreign = split_by_owner(pts, 2, 4)
    assert [p["i"] for p in owned] == [p["i"] for p in pts if owner_partition(p["series"], 4) == 2]
    assert 2 not in foreign
    for owner, group in foreign.items():
        assert all(owner_partition(p["series"], 4) == owner for p in group)
        assert [p["i"] for p in group] == sorted(p["i"] for p in group)
    assert len(owned) + sum(map(len, foreign.values())) == 40


def test_hop_header_in_either_form() -> None:
    assert hop_of(None) is None and hop_of([]) is None
    assert hop_of([("other", b"x"), (HOP_HEADER, FORWARDED)]) == FORWARDED
    assert hop_of({HOP_HEADER: FORWARDED}) == FORWARDED


def test_points_all_owned_here_stay_as_they_are() -> None:
    mine = [f"t|ns|m|Average|s={i}" for i in range(200) if owner_partition(f"t|ns|m|Average|s={i}", 4) == 1]
    pts: list[dict[str, Any]] = [{"series": s, "i": i} for i, s in enumerate(mine * 3)]
    owned, foreign = split_by_owner(pts, 1, 4)
    assert owned == pts and foreign == {}
    owned, foreign = split_by_owner(iter(pts), 3, 4)  # any iterable; none owned by 3
    assert owned == [] and [p for g in foreign.values() for p in g] == pts
    assert split_by_owner([], 0, 4) == ([], {})


def test_remembered_owners_follow_the_partition_count_and_stay_bounded(monkeypatch: Any) -> None:
    from agents.scoring.logic import hops
    keys = [f"t|ns|m|Average|s={i}" for i in range(300)]
    pts: list[dict[str, Any]] = [{"series": k} for k in keys]
    for parts in (4, 7, 4, 1):  # the memo of one count never answers for another
        owned, foreign = split_by_owner(pts, 0, parts)
        assert [p["series"] for p in owned] == [k for k in keys if zlib.crc32(k.encode()) % parts == 0]
        assert all(zlib.crc32(p["series"].encode()) % parts == o for o, g in foreign.items() for p in g)
    monkeypatch.setattr(hops._Owners, "MOST", 100)
    for start in range(0, 3000, 300):  # a burst of new series: the memo starts afresh, the answers stay
        more: list[dict[str, Any]] = [{"series": f"burst|{i}"} for i in range(start, start + 300)]
        owned, foreign = split_by_owner(more, 2, 4)
        assert [p["series"] for p in owned] == [p["series"] for p in more
                                                if zlib.crc32(p["series"].encode()) % 4 == 2]
        assert len(hops._OWNERS.known) <= 100 + 300
