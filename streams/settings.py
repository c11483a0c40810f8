"""The one settings object: every environment name kaizen honours, under its exact name."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """kaizen configuration.

    Field names are the lower-case form of the environment variables documented in the README
    (pydantic-settings matches them case-insensitively), so `MAX_CONCURRENT_IMPROVEMENTS`
    sets `max_concurrent_improvements`. A `.env` file in the working directory is read too.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- Kafka ------------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = None  # unset => embedded Tansu broker
    kafka_topic_partitions: int = 4
    kafka_replication_factor: int = 1
    kaizen_app_id: str = "kaizen"
    kaizen_data_dir: Path = Path(".kaizen")
    kaizen_embedded_kafka_port: int = 0  # 0 => a free port
    kaizen_embedded_moto_port: int = 0
    kaizen_worker_web_port: int = 6066
    kaizen_broker_session_timeout: float = 6.0
    # Offsets are committed every this many seconds, and as soon as the metric path has caught up with a
    # partition (streams/commits.py)
    kaizen_commit_interval_seconds: float = 0.5
    kaizen_connect_wait_seconds: float = 15.0  # how long a command waits at start for the broker / AWS endpoint
    kaizen_fetch_max_wait_ms: int = 100  # Faust's 1500 ms makes each pipeline hop up to 1.5 s late on Tansu  # short: Tansu joins take half a session
    # The codec of every batch kaizen's workers and connectors write (aiokafka's, through cramjam). JSON
    # envelopes repeat their keys: a clean-topic message of 1,000 points shrinks ~14× with zstd for 0.3 µs
    # a point, so the broker stores and serves that much less, and a worker fetches its own clean output
    # that much smaller (docs/throughput.md). Readers need the codec: librdkafka (kcat, confluent-kafka),
    # the Java client and aiokafka with cramjam all have zstd. "none" writes uncompressed batches.
    kaizen_producer_compression: Literal["zstd", "lz4", "gzip", "snappy", "none"] = "zstd"
    kaizen_log_level: str = "info"
    kaizen_log_json: str = "auto"  # true | false | auto (JSON unless the output is a terminal)
    kaizen_connectors_in_worker: bool = False  # run the CloudWatch connectors on the worker group's leader

    # --- AWS / CloudWatch (README: AWS and CloudWatch connectors) ---------------------------
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    aws_endpoint_url: str | None = None  # the AWS SDK's own name; unset + no credentials => moto
    cloudwatch_namespace: str = "MeetMind/MCPUIHub"
    cloudwatch_metrics_period: int = 300
    cloudwatch_metrics_statistics: list[str] = ["Average", "Sum", "Maximum", "p95"]
    cloudwatch_metrics_lag_seconds: int = 600  # late datapoints within this lag are picked up
    # A newly discovered series' recent history is read back (and learnt by scoring without insights),
    # at most this many GetMetricData calls per poll for it (the rest on later polls). 0 turns it off.
    cloudwatch_metrics_history_seconds: int = 172_800
    cloudwatch_metrics_history_calls_per_poll: int = 20
    cloudwatch_dimension_filters: dict[str, str] = {}
    cloudwatch_tenant_dimension: str = "tenant_id"
    cloudwatch_log_group_pattern: str = "/aws/lambda/happyos-*"
    cloudwatch_log_filter_pattern: str = ""
    cloudwatch_logs_insights_query: str | None = None
    cloudwatch_log_sampling_rate: float = 1.0
    cloudwatch_logs_lag_seconds: int = 120  # late log lines this far behind the newest one seen are picked up
    cloudwatch_stream_interval_seconds: float = 60.0
    cloudwatch_event_dedup_window_seconds: int = 300
    cloudwatch_events_queue_url: str | None = None
    cloudwatch_alarm_prefix: str = ""
    cloudwatch_tenant_filter: list[str] = []  # empty => all tenants
    cloudwatch_breaker_failure_threshold: int = 3
    cloudwatch_breaker_recovery_seconds: float = 60.0
    cloudwatch_fallback_dir: Path = Path(".kaizen/fallback")

    # --- Improvement cycle (docs/improvement-cycle.md) -----------------------------------------
    improvement_cycle_interval_hours: float = 24
    improvement_cycle_start_time: str = "02:00"
    max_concurrent_improvements: int = 3
    improvement_quality_threshold: float = 0.85
    improvement_risk_tolerance: float = 0.1
    monitoring_duration_seconds: float = 3600
    monitoring_check_interval_seconds: float = 1.0
    rollback_degradation_threshold: float = 0.10
    canary_fraction: float = 0.1
    canary_share_of_monitoring: float = 0.3  # the canary stage lasts this share of the monitoring period
    monitoring_min_samples: int = 3
    baseline_window_seconds: float = 120.0
    kaizen_actuator: Literal["ssm", "kafka_config", "git"] = "ssm"
    kaizen_git_repo: Path | None = None  # generated code is committed here (default: <data dir>/repo)
    tenant_improvement_configs: dict[str, dict[str, Any]] = {}
    # Confinement of generated change sets (docs/validation.md): paths only under these roots of the
    # repository ("." = anywhere but hidden/VCS/tool-config paths), with these suffixes, within these sizes;
    # per component (or "*"): {"source_roots", "suffixes", "allowed_imports", "capabilities", "max_*"}.
    kaizen_source_roots: list[str] = ["generated", "tests"]
    kaizen_allowed_suffixes: list[str] = [".py", ".json", ".yaml", ".yml", ".toml", ".md", ".txt"]
    kaizen_max_file_bytes: int = 100_000
    kaizen_max_change_bytes: int = 400_000
    kaizen_max_change_files: int = 50
    kaizen_validation_policies: dict[str, dict[str, Any]] = {}
    kaizen_command_max_age_seconds: float = 300.0  # older commands (a replay) are skipped, not re-run
    improvement_profile: Literal["basic", "conservative", "aggressive"] = "basic"

    # --- LLM ----------------------------------------------------------------------------------
    llm_provider: Literal["bedrock", "openai", "google_genai", "offline"] = "offline"
    llm_model: str = "anthropic.claude-v2"
    llm_temperature: float = 0.1
    llm_max_tokens: int = 4000
    llm_base_url: str | None = None  # OpenAI-compatible endpoint
    llm_api_key: str | None = Field(None, validation_alias=AliasChoices("LLM_API_KEY", "OPENAI_API_KEY"))

    # --- MCP server -----------------------------------------------------------------------
    self_building_mcp_port: int = 8004
    self_building_mcp_host: str = "127.0.0.1"
    self_building_mcp_api_key: str | None = None
    self_building_mcp_tokens_file: Path | None = None

    # --- Feature flags (README: feature flags) ----------------------------------------------------
    enable_self_building: bool = True
    enable_cloudwatch_streaming: bool = True
    enable_autonomous_improvements: bool = False
    enable_component_generation: bool = True
    enable_improvement_rollback: bool = True

    # --- Opportunities / patterns / triggers ------------------------------------------------
    opportunity_users_metric: str = "ActiveUsers"
    opportunity_users_dimension: str = "users"
    opportunity_decay_hours: float = 6.0
    pattern_window_seconds: int = 3600
    pattern_recurring_threshold: int = 10
    pattern_max_templates_per_tenant: int = 5_000  # live patterns per tenant (spread over the partitions)
    pattern_max_templates: int = 50_000  # live patterns of all tenants: bounds a worker's memory (README)
    trend_baseline_points: int = 60
    trend_current_points: int = 5
    notifications_webhook_url: str | None = None
    notifications_digest: bool = False

    # --- Ingest contract and bounds (README "Telemetry ingest contract") ------------------------
    ingest_max_record_bytes: int = 262_144  # one record's JSON (CloudWatch's own log-event limit)
    ingest_max_identifier_length: int = 512  # tenant, names, namespace, unit, statistic, event id, log group/stream
    ingest_max_dimension_value_length: int = 1024  # CloudWatch's limit
    ingest_max_dimensions: int = 30  # CloudWatch's limit
    ingest_max_age_days: float = 1826  # older timestamps are implausible (5 years: replays of archives pass)
    ingest_max_future_minutes: float = 120  # CloudWatch accepts datapoints up to 2 h ahead
    kaizen_max_message_bytes: int = 900_000  # outputs are split below this (producer max_request_size 1,000,000)
    scoring_max_series_per_tenant: int = 20_000  # live detectors per tenant (spread over the partitions)
    scoring_max_series: int = 50_000  # live detectors of all tenants: bounds a worker's memory (README)
    # Detector per metric family: JSON object "metric glob" or "unit:<Unit>" -> registry name or River
    # expression, e.g. {"*": "kaizen", "CPUUtilization": "river.anomaly.GaussianScorer(window_size=500)"}
    # (docs/detection.md); checked at start. A River model's checkpoint must fit the byte limit.
    kaizen_detectors: Annotated[dict[str, str], NoDecode] = {}
    kaizen_detector_checkpoint_max_bytes: int = 65_536

    # Ranges: a value outside fails at start naming its variable, instead of a worker dying later on it.
    @field_validator("kafka_topic_partitions", "kafka_replication_factor", "max_concurrent_improvements",
                     "monitoring_min_samples", "pattern_max_templates_per_tenant", "pattern_max_templates")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("monitoring_duration_seconds", "monitoring_check_interval_seconds", "baseline_window_seconds",
                     "cloudwatch_stream_interval_seconds", "kaizen_broker_session_timeout",
                     "kaizen_commit_interval_seconds",
                     "kaizen_connect_wait_seconds", "improvement_cycle_interval_hours")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be greater than 0")
        return v

    @field_validator("canary_fraction", "canary_share_of_monitoring", "improvement_quality_threshold",
                     "improvement_risk_tolerance")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must be between 0.0 and 1.0")
        return v

    @field_validator("rollback_degradation_threshold")
    @classmethod
    def _not_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be 0 or more")
        return v

    @field_validator("self_building_mcp_port", "kaizen_embedded_kafka_port", "kaizen_embedded_moto_port",
                     "kaizen_worker_web_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError("must be a TCP port (0-65535)")
        return v

    @field_validator("kaizen_detectors", mode="before")
    @classmethod
    def _detector_families(cls, v: Any) -> Any:
        """A JSON object of strings; whether each spec builds a River detector is checked at start (kaizen/cli.py)."""
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(s, str) for k, s in v.items()):
            raise ValueError('expected a JSON object {"metric glob or unit:<Unit>": "detector spec", ...}')
        return v

    @field_validator("cloudwatch_log_sampling_rate")
    @classmethod
    def _rate_in_range(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("CLOUDWATCH_LOG_SAMPLING_RATE must be between 0.0 and 1.0")
        return v

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def compression_type(self) -> str | None:
        """KAIZEN_PRODUCER_COMPRESSION as Kafka clients take it (None: uncompressed)."""
        return None if self.kaizen_producer_compression == "none" else self.kaizen_producer_compression

    def tenant_profile(self, tenant_id: str | None) -> dict[str, Any]:
        """The effective improvement profile of a tenant: global profile, then its overrides."""
        base = dict(PROFILES[self.improvement_profile])
        base.setdefault("max_concurrent", self.max_concurrent_improvements)
        if self.improvement_profile == "basic":
            base.update(
                max_concurrent=self.max_concurrent_improvements,
                risk_tolerance=self.improvement_risk_tolerance,
                monitoring_duration=self.monitoring_duration_seconds,
                rollback_threshold=self.rollback_degradation_threshold,
                quality_threshold=self.improvement_quality_threshold,
            )
        if tenant_id and tenant_id in self.tenant_improvement_configs:
            base.update(self.tenant_improvement_configs[tenant_id])
        return base


# Named profiles of the improvement-cycle manual (Configuration Examples).
PROFILES: dict[str, dict[str, Any]] = {
    "basic": {"enabled": True, "interval_hours": 24},
    "conservative": {
        "enabled": True,
        "interval_hours": 168,
        "max_concurrent": 1,
        "quality_threshold": 0.95,
        "risk_tolerance": 0.05,
        "monitoring_duration": 7200,
        "rollback_threshold": 0.05,
    },
    "aggressive": {
        "enabled": True,
        "interval_hours": 6,
        "max_concurrent": 5,
        "quality_threshold": 0.75,
        "risk_tolerance": 0.2,
        "monitoring_duration": 1800,
        "rollback_threshold": 0.15,
    },
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
