"""The improvement engine: cycles, the improvement lifecycle, its steps and monitoring."""
