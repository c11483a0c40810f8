"""kaizen's own Prometheus metrics (the self-building metrics), shared by every process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TELEMETRY_PROCESSED = Counter("kaizen_telemetry_events_processed_total",
                              "Telemetry records accepted by dedup (self_building.telemetry_events_processed)",
                              ["kind"])
DUPLICATES_DROPPED = Counter("kaizen_duplicates_dropped_total", "Records dropped as duplicates in the window",
                             ["tenant", "kind"])
DEADLETTERS = Counter("kaizen_deadletters_total", "Records sent to the dead-letter topic", ["kind"])
INSIGHTS_GENERATED = Counter("kaizen_insights_generated_total", "Insights emitted (self_building.insights_generated)",
                             ["source"])
OPPORTUNITIES_UPDATED = Counter("kaizen_opportunities_updated_total", "Opportunity updates published")
CYCLES_STARTED = Counter("kaizen_improvement_cycles_started_total", "Improvement cycles started", ["kind"])
CYCLES_COMPLETED = Counter("kaizen_improvement_cycles_completed_total", "Improvement cycles completed", ["kind"])
IMPROVEMENTS_DEPLOYED = Counter("kaizen_improvements_deployed_total", "Improvements deployed")
IMPROVEMENTS_ROLLED_BACK = Counter("kaizen_improvements_rolled_back_total", "Improvements rolled back")
CODEGEN_REQUESTS = Counter("kaizen_code_generation_requests_total", "Code generation requests", ["outcome"])
CODEGEN_DURATION = Histogram("kaizen_code_generation_duration_ms", "Code generation duration (ms)",
                             buckets=(10, 50, 100, 500, 1000, 5000, 20000, 60000))
LLM_TOKENS = Counter("kaizen_llm_tokens_used_total", "LLM tokens used", ["direction"])
ACTIVE_IMPROVEMENTS = Gauge("kaizen_active_improvements", "Improvements between generating and monitoring")
SCORING_POINTS = Counter("kaizen_scored_points_total", "Metric points scored by the anomaly detector")
