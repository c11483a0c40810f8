"""Events stage: CloudWatch alarms, Lambda completions and deployments into insights."""
