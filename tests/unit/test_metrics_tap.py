"""The metrics tap keeps samples of watched components only, and skips other messages unparsed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from agents.improvement.metrics_tap import MetricsTap
from streams import topics as T
from streams.codec import encode_lean
from streams.metric_codec import lean_metric
from streams.records import ImprovementOpportunity
from streams.views import StateViews

T0 = 1_700_000_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _views(*components: str, status: str = "open") -> StateViews:
    """Views holding one opportunity per component of tenant acme (not started: fed by hand)."""
    views = StateViews("127.0.0.1:1")
    for c in components:
        _opportunity(views, c, status)
    return views


def _opportunity(views: StateViews, component: str, status: str = "open") -> None:
    opp = ImprovementOpportunity.model_validate(dict(
        opportunity_id=f"opp-{component}", title=component, description="slow", tenant_id="acme", status=status,
        problem_type="latency", affected_components=[component], first_seen=NOW, last_seen=NOW))
    views._on(T.OPPORTUNITIES, opp.opportunity_id.encode(), opp.to_bytes())


def _msg(component: str, tenant: str = "acme", value: float = 100.0, i: int = 0, variant: str | None = None) -> bytes:
    dims = {"service": component, **({"variant": variant} if variant else {})}
    p = lean_metric({"metric_name": "Latency", "value": value, "timestamp": T0 + i, "tenant_id": tenant,
                     "namespace": "Shop", "dimensions": dims})
    return encode_lean([p])


def test_only_watched_components_are_kept_and_others_are_not_parsed() -> None:
    tap = MetricsTap("127.0.0.1:1", watch=_views("checkout"))
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
    views = _views("checkout", "search")
    tap = MetricsTap("127.0.0.1:1", watch=views)
    tap._on("t", None, _msg("checkout", i=1))
    tap._on("t", None, _msg("search", i=2))
    assert set(tap.samples) == {("acme", "checkout"), ("acme", "search")}
    _opportunity(views, "search", status="resolved")  # its opportunity closes
    tap._refreshed = 0.0  # the refresh is rate-limited to twice a second
    tap._on("t", None, _msg("checkout", i=3))
    assert set(tap.samples) == {("acme", "checkout")}


def test_without_a_watch_list_every_component_is_kept() -> None:
    tap = MetricsTap("127.0.0.1:1")
    tap._on("t", None, _msg("checkout"))
    tap._on("t", None, orjson.dumps({"records": [{"metric_name": "Latency", "value": 5, "timestamp": T0,
                                                  "tenant_id": "acme", "dimensions": {"service": "search"}}]}))
    assert set(tap.samples) == {("acme", "checkout"), ("acme", "search")}
