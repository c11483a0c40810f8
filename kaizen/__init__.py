"""The top layer: the kaizen commands, process supervision, the embedded stack and the demo."""
