"""Which partition owns a metric series, and the message headers that say how far a batch has travelled (pure).

A series is owned by one partition of the raw metric topic (streams/ownership.py); its dedup window,
detector and trend state live there. Producers that write each envelope to the partition owning its
series (the connectors do) get the one-hop path; points that arrive elsewhere are forwarded once, with
a header, to their owner. See docs/throughput.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

from streams.ownership import owner_partition

__all__ = ["FORWARDED", "FROM_CLEAN", "HOP_HEADER", "SCORED", "hop_of", "owner_partition", "split_by_owner"]

HOP_HEADER = "kaizen-hop"
FORWARDED = b"forwarded"   # raw topic: lean points sent on to the partition owning their series
FROM_CLEAN = b"from-clean"  # raw topic: points a producer wrote to the clean topic (not written there again)
SCORED = b"scored"          # clean topic: points the one-hop stage already deduplicated and scored


class _Owners:
    """The owner partition (owner_partition) of each series key seen lately: one dict probe per point
    instead of encoding and crc32-ing the key (≈ 0.19 → 0.07 µs a point). The probe also caches the key
    string's hash, which the grouping by series reuses. Bounded: past MOST keys (a cardinality burst) the
    memo starts afresh."""

    MOST = 1 << 18

    def __init__(self) -> None:
        self.partitions = 0
        self.known: dict[str, int] = {}

    def of(self, keys: list[str], partitions: int) -> list[int]:
        if partitions != self.partitions:
            self.partitions, self.known = partitions, {}
        known = self.known
        found = list(map(known.get, keys))
        if None not in found:
            return cast("list[int]", found)
        if len(known) > self.MOST:
            known.clear()
        return [o if o is not None else known.setdefault(k, owner_partition(k, partitions))
                for k, o in zip(keys, found, strict=True)]


_OWNERS = _Owners()
_SERIES = itemgetter("series")


def split_by_owner(points: Iterable[dict[str, Any]], partition: int, partitions: int
                   ) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """(points this partition owns, the others grouped by their owner), each in arrival order."""
    points = points if isinstance(points, list) else list(points)
    owners = _OWNERS.of(list(map(_SERIES, points)), partitions)
    # When this partition owns every point — producers keying by series, the connectors — the points are
    # kept as they are. (Owners per distinct series instead cost more for envelopes of one point a series.)
    if owners.count(partition) == len(owners):
        return points, {}
    owned: list[dict[str, Any]] = []
    foreign: dict[int, list[dict[str, Any]]] = {}
    for p, owner in zip(points, owners, strict=True):
        if owner == partition:
            owned.append(p)
        else:
            group = foreign.get(owner)
            if group is None:
                foreign[owner] = [p]
            else:
                group.append(p)
    return owned, foreign


def hop_of(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bytes | None:
    """The kaizen-hop header of a message (Faust gives headers as a list of pairs or a mapping)."""
    if not headers:
        return None
    if isinstance(headers, Mapping):
        return headers.get(HOP_HEADER)
    for k, v in headers:
        if k == HOP_HEADER:
            return v
    return None
