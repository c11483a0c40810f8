"""Ingest stage: validation and windowed dedup of the raw telemetry topics."""
