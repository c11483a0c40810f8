"""Self-healing stage: triggers over execution metrics, actions, history and notifications."""
