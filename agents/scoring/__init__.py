"""Scoring stage: one online anomaly detector and trend tracker per metric series."""
