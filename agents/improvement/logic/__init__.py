"""Pure logic of the improvement engine: lifecycle, playbooks, prompts, validation, guardrails, verdicts."""
