"""Which series a partition may keep a live detector for: a cap of live series per tenant (pure).

SCORING_MAX_SERIES_PER_TENANT is the cap for a tenant over the whole cluster; each partition admits
its share (cap / partitions, rounded up), so the answer depends only on the partition a series hashes
to, never on how many workers share them. A series is admitted at its first point while the tenant has
room in the partition (and the partition under its share of SCORING_MAX_SERIES, all tenants
together: what bounds a worker's memory), and stays admitted (its detector is checkpointed at once, so admission survives
a restart). Points of series that are not admitted are returned for the caller to dead-letter
(reason "series cap"): counted and kept, never scored and never silently lost.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any


def per_partition_cap(cap_per_tenant: int, partitions: int) -> int:
    return max(1, math.ceil(cap_per_tenant / max(1, partitions)))


class Admission:
    """Admitted series of one partition, counted per tenant."""

    def __init__(self, cap: int, admitted: Iterable[str] = (), total_cap: int | None = None) -> None:
        self.cap = cap
        self.total_cap = total_cap
        self.admitted: set[str] = set(admitted)
        self.per_tenant: Counter[str] = Counter(k.split("|", 1)[0] for k in self.admitted)

    def admit(self, series: str, tenant: str) -> bool:
        if series in self.admitted:
            return True
        if self.per_tenant[tenant] >= self.cap:
            return False
        if self.total_cap is not None and len(self.admitted) >= self.total_cap:
            return False
        self.admitted.add(series)
        self.per_tenant[tenant] += 1
        return True


def split_admitted(adm: Admission, points: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                                             list[dict[str, Any]]]:
    """(points of admitted series, points beyond the cap) — in their order."""
    points = points if isinstance(points, list) else list(points)
    if adm.admitted.issuperset([p["series"] for p in points]):  # the usual message: every series known
        return points, []
    keep: list[dict[str, Any]] = []
    over: list[dict[str, Any]] = []
    for p in points:
        (keep if adm.admit(p["series"], p["tenant_id"]) else over).append(p)
    return keep, over
