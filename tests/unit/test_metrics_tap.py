"""The metrics tap keeps samples of watched components only, and skips other messages unparsed."""

from __future__ import annotations

import orjson

from streams.codec import encode_lean
from streams.metric_codec import lean_metric
from streams.views import MetricsTap

T0 = 1_700_000_000


def _msg(component: str, tenant: str = "acme", value: float = 100.0, i: int = 0, variant: str | None = None) -> bytes:
    dims = {"service": component, **({"variant": variant} if variant else {})}
    p = lean_metric({"metric_name": "Latency", "value": value, "timestamp": T0 + i, "tenant_id": tenant,
                     "namespace": "Shop", "dimensions": dims})
    return encode_lean([p])


def test_only_watched_components_are_kept_and_others_are_not_parsed() -> None:
    watch = {("acme", "checkout")}
    version = [1]
    tap = MetricsTap("127.0.0.1:1", watch=lambda: set(watch), watch_version=lambda: version[0])
    tap._on("t", None, b"{not json at all, and no watched name}")  # skipped before parsing: no error
    tap._on("t", None, _msg("search", i=1))
    tap._on("t", None, _msg("checkout", tenant="globex", i=2))  # same component, other tenant
    tap._on("t", None, _msg("checkout", i=3, value=120.0))
    tap._on("t", None, _msg("checkout", i=4, value=300.0, variant="canary"))
    assert set(tap.samples) == {("acme", "checkout")}
    stable = tap.window("acme", "checkout", T0)
    assert [s.value for s in stable] == [120.0]
    assert [s.value for s in tap.window("acme", "checkout", T0, variant="canary")] == [300.0]


def test_unwatched_components_are_dropped_when_the_watch_list_changes() -> None:
    watch = {("acme", "checkout"), ("acme", "search")}
    version = [1]
    tap = MetricsTap("127.0.0.1:1", watch=lambda: set(watch), watch_version=lambda: version[0])
    tap._on("t", None, _msg("checkout", i=1))
    tap._on("t", None, _msg("search", i=2))
    assert set(tap.samples) == {("acme", "checkout"), ("acme", "search")}
    watch.discard(("acme", "search"))
    version[0] += 1
    tap._refreshed = 0.0  # the refresh is rate-limited to twice a second
    tap._on("t", None, _msg("checkout", i=3))
    assert set(tap.samples) == {("acme", "checkout")}


def test_without_a_watch_list_every_component_is_kept() -> None:
    tap = MetricsTap("127.0.0.1:1")
    tap._on("t", None, _msg("checkout"))
    tap._on("t", None, orjson.dumps({"records": [{"metric_name": "Latency", "value": 5, "timestamp": T0,
                                                  "tenant_id": "acme", "dimensions": {"service": "search"}}]}))
    assert set(tap.samples) == {("acme", "checkout"), ("acme", "search")}
