"""Pure logic of self-healing: triggers, actions, execution metrics and alert rules."""
