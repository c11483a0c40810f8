"""Which partition of the raw metric topic owns a metric series: crc32 of its series key, modulo partitions.

The series' dedup window, detector and trend state live on that partition (agents/scoring/fused.py).
crc32 is what librdkafka's default partitioner applies to a message key, so a librdkafka producer
that keys a one-series message by the series key lands on the owner too; any other producer picks
the partition itself. See docs/throughput.md.
"""

from __future__ import annotations

import zlib


def owner_partition(series: str, partitions: int) -> int:
    return zlib.crc32(series.encode()) % partitions
