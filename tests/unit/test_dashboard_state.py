"""What the dashboard charts and counts: series by what changes now, patterns by their current window."""

from __future__ import annotations

import time

from mcp_server.api import chart_order, pattern_now, series_interest

NOW = 1_800_000_000.0


def _series(name: str, values: list[float], scores: list[float | None] | None = None) -> dict[str, object]:
    scores = scores or [0.01] * len(values)
    return {"series": name, "points": [[NOW - 60 * (len(values) - i), v, s]
                                       for i, (v, s) in enumerate(zip(values, scores, strict=True))]}


def test_an_old_peak_ranks_below_a_spike_now_and_a_new_series() -> None:
    old_peak = _series("old", [50.0 + i % 4 for i in range(60)], [0.99 if i == 20 else 0.02 for i in range(60)])
    spiking = _series("spiking", [20.0] * 57 + [90.0, 95.0, 97.0], [0.01] * 57 + [0.4, 0.4, 0.4])
    new = _series("new", [3.0, 4.0, 5.0], [None, None, None])
    quiet = _series("quiet", [10.0 + i % 2 for i in range(60)])
    assert series_interest(spiking)[1] == "spiking"
    assert series_interest(new) == (0.6, "new")
    assert series_interest(old_peak) == (0.0, "")  # its anomaly was 40 minutes ago; wobble is not a spike
    ordered = [s["series"] for s in chart_order([quiet, old_peak, new, spiking])]
    assert ordered[:2] == ["spiking", "new"] and ordered.index("old") < ordered.index("quiet")


def test_a_high_score_now_is_anomalous_now() -> None:
    s = _series("s", [100.0] * 30, [0.02] * 29 + [0.95])
    assert series_interest(s) == (0.95, "anomalous now")


def test_pattern_times_are_epoch_seconds_and_the_count_is_of_the_current_window() -> None:
    now = time.time()
    current = pattern_now({"count_window": 12, "window_start": now - 600, "last_seen": now - 5,
                           "first_seen": "2026-12-06T10:00:00Z"}, 3600, now)
    assert current["count_current"] == 12 and current["last_seen"] == now - 5
    assert current["first_seen"] == 1796551200.0  # ISO strings (older records) become epoch seconds too
    stale = pattern_now({"count_window": 40, "window_start": now - 3 * 3600, "last_seen": now - 2 * 3600},
                        3600, now)
    assert stale["count_current"] == 0  # counted in a window that has passed
    ms = pattern_now({"count_window": 1, "last_seen": (now - 5) * 1000}, 3600, now)
    assert abs(ms["last_seen"] - (now - 5)) < 1e-3  # milliseconds are read as such, never as 1970 dates
