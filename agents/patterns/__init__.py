"""Error-pattern stage: log lines mined into templates, counted per window."""
