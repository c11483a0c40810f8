"""Validation of generated change sets: confinement (allow-lists) and quality gates; see docs/validation.md."""

from agents.improvement.logic.validation.core import change_diff, validate
from agents.improvement.logic.validation.findings import CHECKS, Finding, ValidationResult
from agents.improvement.logic.validation.policy import Policy, make_policy, policy_from_settings

__all__ = ["CHECKS", "Finding", "Policy", "ValidationResult", "change_diff", "make_policy", "policy_from_settings",
           "validate"]
