"""The peer a user compares kaizen with: a hand-written Quix Streams + River script over the same topic.

Decode the envelope, one River `stats.EWMean` + `stats.EWVar` z-score per series in a dict, emit
|z| > 4 — no dedup, no checkpoints, no trend rules, no opportunities. Run by `pipeline_throughput`
as its own process on the same broker and load; it writes when it saw its first and last point.

    python -m benchmarks.quix_peer        (env: KAFKA_BOOTSTRAP_SERVERS, BENCH_TOPIC, BENCH_EXPECT_POINTS, BENCH_OUT)
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import orjson


def main() -> None:
    from quixstreams import Application
    from river import stats

    topic_name = os.environ["BENCH_TOPIC"]
    expect, out = int(os.environ["BENCH_EXPECT_POINTS"]), os.environ["BENCH_OUT"]
    app = Application(
        broker_address=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        consumer_group=os.environ.get("BENCH_GROUP", "bench-quix-peer"),
        auto_offset_reset="earliest",
        # The embedded broker joins slowly with client defaults (docs/embedded-broker.md).
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        use_changelog_topics=False,
    )
    source = app.topic(topic_name, value_deserializer="bytes")
    sink = app.topic(os.environ.get("BENCH_SINK", "bench.peer.anomalies"), value_serializer="json")
    models: dict[str, tuple[Any, Any]] = {}
    seen = {"points": 0, "first": 0.0}

    def score(raw: bytes) -> list[dict[str, Any]]:
        if seen["points"] == 0:
            seen["first"] = time.time()
        env = orjson.loads(raw)
        alerts = []
        for p in env["records"]:
            key = f'{p["tenant_id"]}|{p["metric_name"]}|{orjson.dumps(p.get("dimensions") or {}).decode()}'
            m = models.get(key)
            if m is None:
                m = models[key] = (stats.EWMean(fading_factor=0.05), stats.EWVar(fading_factor=0.05))
            mean, var = m
            x = float(p["value"])
            sd = math.sqrt(var.get()) if var.get() > 0 else 0.0
            if sd > 0 and abs(x - mean.get()) / sd > 4:
                alerts.append({"series": key, "value": x})
            mean.update(x)
            var.update(x)
        seen["points"] += len(env["records"])
        if seen["points"] >= expect:
            with open(out, "wb") as fh:
                fh.write(orjson.dumps({"first": seen["first"], "last": time.time(), "points": seen["points"],
                                       "series": len(models)}))
            app.stop()
        return alerts

    app.dataframe(source).apply(score, expand=True).to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
