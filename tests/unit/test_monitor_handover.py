"""Monitoring taken over by another worker: the verdict waits for the stage's whole window of telemetry.

A worker that takes an improvement's monitoring over (its predecessor left mid-stage), or whose clean
metrics lag, may hold only the first samples of a canary stage, stable traffic without the canary's
samples. Judged on those, a harmful canary looked healthy and was kept (the equivalence test's two-worker
run kept `eq-bad`). The stage is judged once telemetry stamped at or after its end has arrived and no
read-back is under way; what then shows the canary's harm rolls it back.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agents.improvement import steps
from agents.improvement.metrics_tap import MetricsTap, Sample
from tests.unit.test_improvement_events import Recorder, _to_monitoring


def _feed(tap: MetricsTap, since: float, start: float, end: float, canary: float | None) -> None:
    key = ("acme", "api")
    ts = start
    while ts < end:
        tap.samples[key].append((since + ts, Sample("Latency", 100.0, None, "Milliseconds")))
        tap.samples[key].append((since + ts, Sample("ErrorRate", 0.001, None, "None")))
        if canary is not None:
            tap.samples[key].append((since + ts, Sample("Latency", canary, "canary", "Milliseconds")))
        ts += 0.25


async def test_a_canary_stage_is_not_judged_on_the_first_samples_only(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import app as A

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    rec = Recorder()
    ctx, _act, clock, ex = await _to_monitoring(tmp_path, rec, latency=100.0)
    assert ex.status == "monitoring" and ex.deployment["stage"] == "canary"
    since = float(ex.deployment["stage_started_at"])
    tap = MetricsTap("127.0.0.1:1")  # not started: fed by hand, as the new owner's tap after a handover
    ctx.tap = tap
    # the new owner holds one second of stable traffic (before the canary's samples came through)
    _feed(tap, since, 0.0, 1.0, canary=None)
    clock.now += timedelta(seconds=10)  # the canary stage (6 s) is over by the clock
    assert await steps.monitor_once(ctx, ex) == []  # not "canary healthy": its window has not arrived
    # a read-back under way: still not judged
    _feed(tap, since, 1.0, 10.0, canary=None)
    tap._pending[("acme", "api")] = {}
    assert await steps.monitor_once(ctx, ex) == []
    tap._pending.clear()
    # the stage's telemetry arrives, the canary's slower samples with it: rolled back
    tap.samples.clear()
    _feed(tap, since, 0.0, 10.0, canary=150.0)
    ex = rec.take(ex, await steps.monitor_once(ctx, ex))
    assert ex.status == "rolling_back", ex.history[-1].reason


async def test_a_stage_without_its_telemetry_ends_inconclusive_not_kept(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import app as A

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    rec = Recorder()
    ctx, _act, clock, ex = await _to_monitoring(tmp_path, rec, latency=100.0)
    since = float(ex.deployment["stage_started_at"])
    tap = MetricsTap("127.0.0.1:1")
    ctx.tap = tap
    _feed(tap, since, 0.0, 1.0, canary=None)
    clock.now += timedelta(seconds=40)  # twice the monitoring period, but not yet after the stage's end
    assert await steps.monitor_once(ctx, ex) == []
    clock.now += timedelta(seconds=7)  # twice the monitoring period after the stage's end: its window never arrived
    ex = rec.take(ex, await steps.monitor_once(ctx, ex))
    assert ex.status == "rolling_back" and ex.history[-1].data["verdict"] == "inconclusive"


async def test_a_baseline_stored_without_latency_is_read_again_not_skipped(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import app as A

    monkeypatch.setattr(A.settings, "kaizen_data_dir", tmp_path)
    rec = Recorder()
    ctx, _act, clock, ex = await _to_monitoring(tmp_path, rec, latency=100.0)
    since = float(ex.deployment["stage_started_at"])
    for k in ("latency_p50", "latency_p95", "latency_p99"):  # the deploying worker's tap had no latency yet
        ex.baseline.pop(k)
    tap = MetricsTap("127.0.0.1:1")
    ctx.tap = tap
    _feed(tap, since, -15.0, 10.0, canary=None)  # the window before the deploy has arrived since
    for smp in [(ts, s) for ts, s in tap.samples[("acme", "api")] if ts >= since]:
        tap.samples[("acme", "api")].append((smp[0], Sample("Latency", 150.0, "canary", "Milliseconds")))
    clock.now += timedelta(seconds=10)
    ex = rec.take(ex, await steps.monitor_once(ctx, ex))
    assert ex.status == "rolling_back" and ex.history[-1].data["verdict"] == "rollback", ex.history[-1].reason
