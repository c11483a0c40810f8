"""Prometheus metrics of the MCP server: tool calls, and the self-building metrics from the read model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TOOL_CALLS = Counter("kaizen_mcp_tool_calls", "MCP tool calls by tool and outcome", ["tool", "outcome"])
API_AUTH_FAILURES = Counter("kaizen_mcp_auth_failures", "HTTP requests refused for a missing or wrong token")


class SelfBuildingCollector(Collector):
    """Exposes `self_building_*` gauges computed on scrape from whatever service is currently bound."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None  # returns SelfBuildingMetrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.source is None:
            return
        m = self.source()
        for name, value in m.model_dump().items():
            if value is None:
                continue
            g = GaugeMetricFamily(f"self_building_{name}", f"self_building.{name} (from the state topics)")
            g.add_metric([], float(value))
            yield g


COLLECTOR = SelfBuildingCollector()
REGISTRY.register(COLLECTOR)


def bind(source: Callable[[], Any]) -> None:
    """Point the self-building gauges at a service's metrics() (the last server built wins)."""
    COLLECTOR.source = source
