"""Which log lines a partition may count: a cap of live patterns per tenant (pure).

PATTERN_MAX_TEMPLATES_PER_TENANT is the cap for a tenant over the whole cluster; each partition admits
its share (cap / partitions, rounded up), so the answer depends only on the partition a line lands on,
never on how many workers share them. A pattern is one template in one log group (one entry of the
PatternCounter: its counts, sample and changelog key). A line whose pattern the tenant already has is
always counted; a line that would open a new pattern is counted while the tenant has room in the
partition (and the partition is under its share of PATTERN_MAX_TEMPLATES, all tenants together: what
bounds a worker's memory), and otherwise returned to the caller to dead-letter (reason "pattern cap"):
counted and kept, never silently lost. Such a line does not touch the miner either, so a tenant beyond
its cap cannot fill the miner's shared clusters and change what other tenants' lines match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agents.patterns.logic.patterns import PatternCounter, entry_key
from agents.patterns.logic.templates import PatternMatch, PatternMiner
from streams.records import LogEvent


def per_partition_cap(cap: int, partitions: int) -> int:
    return max(1, math.ceil(cap / max(1, partitions)))


@dataclass(frozen=True)
class PatternCap:
    """The partition's share of the per-tenant cap and of the cap of all tenants together."""

    per_tenant: int
    total: int

    @classmethod
    def share(cls, per_tenant: int, total: int, partitions: int) -> PatternCap:
        return cls(per_partition_cap(per_tenant, partitions), per_partition_cap(total, partitions))

    def has_room(self, counter: PatternCounter, tenant_id: str) -> bool:
        return counter.per_tenant[tenant_id] < self.per_tenant and len(counter.entries) < self.total


def admit_line(miner: PatternMiner, counter: PatternCounter, cap: PatternCap, ev: LogEvent) -> PatternMatch | None:
    """The line's pattern (the miner has learnt the line) when it may be counted; None when it would
    open a pattern beyond the cap — then the miner is left untouched."""
    if cap.has_room(counter, ev.tenant_id):
        return miner.add(ev.message)
    known = miner.match(ev.message)
    if known is None or entry_key(ev.tenant_id, ev.log_group, known.pattern_id) not in counter.entries:
        return None
    m = miner.add(ev.message)
    # add() folds the line into the pattern match() named; should it ever choose another, the cap still holds
    return m if entry_key(ev.tenant_id, ev.log_group, m.pattern_id) in counter.entries else None

