"""Opportunities stage: insights folded into ranked improvement opportunities."""
