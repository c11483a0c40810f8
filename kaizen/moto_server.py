"""The embedded AWS endpoint: moto's server, with CloudWatch's GetMetricData keyed by namespace as AWS does.

moto (5.x) matches a GetMetricData query that has dimensions on metric name and dimensions only, so two
services that report the same metric with the same dimensions under their own namespaces (the lab: one
namespace per service, the tenant as the only dimension) each get the average of both. Real CloudWatch
keys a metric by namespace, name and dimensions; this wrapper answers each namespace's queries from that
namespace's points only, then runs moto's server unchanged.

Run as `python -m kaizen.moto_server [moto.server options]` (kaizen/embedded.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any


class _Namespace:
    """The backend as one namespace's queries see it: its metrics only, anything else delegated."""

    def __init__(self, backend: Any, namespace: str) -> None:
        self._backend, self._namespace = backend, namespace

    def get_all_metrics(self) -> list[Any]:
        return [md for md in self._backend.get_all_metrics() if md.namespace == self._namespace]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def patch_get_metric_data() -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    original: Callable[..., list[dict[str, Any]]] = CloudWatchBackend.get_metric_data
    if getattr(original, "_by_namespace", False):
        return

    def get_metric_data(self: Any, queries: list[dict[str, Any]], start_time: datetime, end_time: datetime,
                        scan_by: str = "TimestampAscending") -> list[dict[str, Any]]:
        if not queries or any("MetricStat" not in q for q in queries):
            return original(self, queries, start_time, end_time, scan_by)  # expressions: moto's own way
        by_ns: dict[str, list[dict[str, Any]]] = {}
        for q in queries:
            by_ns.setdefault(str(q["MetricStat"]["Metric"].get("Namespace", "")), []).append(q)
        results: list[dict[str, Any]] = []
        for ns, group in by_ns.items():  # a view of the backend per namespace: other requests run meanwhile
            results.extend(original(_Namespace(self, ns), group, start_time, end_time, scan_by))
        order = {q["Id"]: i for i, q in enumerate(queries)}
        return sorted(results, key=lambda r: order.get(r.get("id", r.get("Id")), len(order)))

    get_metric_data._by_namespace = True  # type: ignore[attr-defined]
    CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign]


def main() -> None:
    from moto.server import main as moto_main

    patch_get_metric_data()
    moto_main()


if __name__ == "__main__":
    main()
