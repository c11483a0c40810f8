"""Benchmarks: throughput, latency, memory and quality, each measured beside its anchor."""
