"""Which partition a record goes to, so that one worker owns each series, pattern and opportunity."""

from __future__ import annotations

import zlib

from agents.opportunities.logic.opportunities import opportunity_id, problem_family
from streams.records import TelemetryInsight


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def insight_partition(insight: TelemetryInsight, partitions: int) -> int:
    """Insights are partitioned by the opportunity they feed (tenant, component, problem family):
    the opportunities agent is then the one writer of each opportunity."""
    oid = opportunity_id(insight.tenant_id, insight.affected_component, problem_family(insight))
    return partition_of(oid, partitions)
