"""Policies healing actions set on `config.changes` and the readers the LLM generator and validation use (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agents.healing.logic.execution_metrics import PRICING_PER_1K

__all__ = [
    "COST_POLICY_KEY",
    "MIN_TOKEN_BUDGET",
    "STRICTNESS_KEY",
    "TOKEN_BUDGET_KEY",
    "active_policy",
    "cost_policy_value",
    "effective_max_tokens",
    "policy_key",
    "strict_validation",
    "strictness_value",
    "token_budget_value",
]

TOKEN_BUDGET_KEY = "policy/llm/token_budget"
COST_POLICY_KEY = "policy/llm/cost"
STRICTNESS_KEY = "policy/validation/strictness"
MIN_TOKEN_BUDGET = 256  # below this a code answer no longer fits; the budget is not halved further
OWN_TENANT = "kaizen"  # kaizen's own executions: their policies are kaizen's (global keys)


def policy_key(key: str, tenant_id: str) -> str:
    """Where a firing of `tenant_id` writes the policy: kaizen's own firings the global key, which kaizen's
    LLM generator and validation read; a monitored tenant's firings `<tenant>/<key>` (the config topic's
    tenant/parameter convention), read by validation for that tenant's improvements and by the tenant's
    own services, never by kaizen's LLM calls (a service's spending does not cut kaizen's budget)."""
    return key if tenant_id == OWN_TENANT else f"{tenant_id}/{key}"


def active_policy(config: Mapping[str, Any], key: str, now: datetime) -> dict[str, Any] | None:
    """The policy record under `key` if it is still in force (expires_at in the future), else None."""
    rec = config.get(key)
    if not isinstance(rec, dict):
        return None
    expires = rec.get("expires_at")
    if isinstance(expires, int | float) and expires <= now.timestamp():
        return None
    return rec


def token_budget_value(current: Any, llm_max_tokens: int, now: datetime, expires_at: float) -> dict[str, Any]:
    """optimize_token_usage: half the budget in force (LLM_MAX_TOKENS when none), not below MIN_TOKEN_BUDGET."""
    base = llm_max_tokens
    if isinstance(current, dict) and isinstance(current.get("max_tokens"), int | float):
        if not isinstance(current.get("expires_at"), int | float) or current["expires_at"] > now.timestamp():
            base = int(current["max_tokens"])
    return {"max_tokens": max(MIN_TOKEN_BUDGET, base // 2), "set_at": now.timestamp(), "expires_at": expires_at}


def cost_policy_value(max_cost_usd: float, now: datetime, expires_at: float) -> dict[str, Any]:
    """adjust_cost_policies: no LLM call may be allowed to cost more than the trigger's per-task limit."""
    return {"max_cost_usd_per_call": float(max_cost_usd), "set_at": now.timestamp(), "expires_at": expires_at}


def strictness_value(now: datetime, expires_at: float) -> dict[str, Any]:
    """enforce_test_standards: strict validation (no auto-approval) while test failures are high."""
    return {"level": "strict", "set_at": now.timestamp(), "expires_at": expires_at}


def effective_max_tokens(config: Mapping[str, Any], default: int, model: str | None, now: datetime) -> int:
    """The max_tokens an LLM call may ask for: LLM_MAX_TOKENS, lowered by a token budget in force, and by a
    cost cap in force (the output tokens the cap buys at the model's price; unpriced models are not capped)."""
    limit = default
    budget = active_policy(config, TOKEN_BUDGET_KEY, now)
    if budget is not None and isinstance(budget.get("max_tokens"), int | float):
        limit = min(limit, int(budget["max_tokens"]))
    cost = active_policy(config, COST_POLICY_KEY, now)
    price = PRICING_PER_1K.get(model or "")
    if cost is not None and price is not None and price[1] > 0:
        cap = float(cost.get("max_cost_usd_per_call", 0.0))
        limit = min(limit, max(1, int(cap / price[1] * 1000)))
    return limit


def strict_validation(config: Mapping[str, Any], now: datetime, tenant_id: str | None = None) -> bool:
    """Whether a strict-validation policy is in force (set by enforce_test_standards): kaizen-wide, or for
    this tenant's improvements."""
    keys = [STRICTNESS_KEY] + ([policy_key(STRICTNESS_KEY, tenant_id)] if tenant_id else [])
    return any((rec := active_policy(config, k, now)) is not None and rec.get("level") == "strict" for k in keys)
