"""Pure logic of the scoring stage: detectors, trend rules, the per-series model."""
