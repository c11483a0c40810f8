"""The fault lab: fault cases (YAML), run through the real loop side by side, scored against their oracle."""
