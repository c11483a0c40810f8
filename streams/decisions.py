"""Who may approve, reject, defer or resolve which improvement, in which state: one rule for MCP and workers.

The MCP server checks it before it publishes a decision (and answers the caller with the refusal);
the worker checks it again when it applies the decision (a command may come from elsewhere, or the
state may have moved meanwhile).  Both call `refusal()` with what they know, so they cannot disagree.

- approve: role approver (or admin); never the principal who requested the improvement (four eyes).
- reject:  role approver (or admin); a stop is always allowed to the requester too.
- defer:   role operator or above (postpones, changes nothing).
- resolve_conflict: role approver (or admin), on an improvement paused as `conflict` (retry the rollback,
  or keep the values someone else set); the requester may resolve too (it restores or keeps, never deploys).
- A system-wide change (opportunity scope "system") is decided only by an all-tenant approver or admin.
- Each decision applies to the statuses in DECIDABLE (the lifecycle's transitions out of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from streams.commands import DecisionKind

DecisionName = DecisionKind | Literal["resolve_conflict"]

ROLES: tuple[str, ...] = ("reader", "operator", "approver", "admin")
# A role implies the ones before it in this order of power (admin ⊇ approver ⊇ operator ⊇ reader).
IMPLIED_ROLES: dict[str, frozenset[str]] = {r: frozenset(ROLES[: i + 1]) for i, r in enumerate(ROLES)}
SYSTEM_ROLE = "system"  # the scheduler and alarms: may trigger cycles, never decide

REQUIRED_ROLE: dict[DecisionName, str] = {"approve": "approver", "reject": "approver", "defer": "operator",
                                          "resolve_conflict": "approver"}
DECIDABLE: dict[DecisionName, frozenset[str]] = {
    "approve": frozenset({"awaiting_approval", "deferred"}),
    "reject": frozenset({"pending", "queued", "awaiting_approval", "deferred"}),
    "defer": frozenset({"awaiting_approval"}),
    "resolve_conflict": frozenset({"conflict"}),
}
# Statuses an improvement passes through before a person can decide on it: a decision that arrives
# while the improvement is still here may have overtaken the state it was made on (the worker waits).
BEFORE_DECISION: frozenset[str] = frozenset({"pending", "queued", "generating", "validating"})


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    """The roles held, with the ones they imply."""
    out: set[str] = set()
    for role in roles:
        out |= IMPLIED_ROLES.get(role, frozenset())
    return frozenset(out)


def has_role(roles: Iterable[str], *wanted: str) -> bool:
    eff = effective_roles(roles)
    return any(r in eff for r in wanted)


@dataclass(frozen=True)
class Refusal:
    """Why a decision is refused; `forbidden` (the principal may not) or not (the state does not allow it)."""

    message: str
    forbidden: bool


def refusal(decision: DecisionName, *, actor: str, roles: Iterable[str], all_tenants: bool, requested_by: str,
            status: str, system_wide: bool, improvement_id: str = "", terminal: bool = False) -> Refusal | None:
    """None when `actor` may take `decision` on the improvement now; else the reason it may not."""
    roles = list(roles)
    what = f"'{improvement_id}'" if improvement_id else "the improvement"
    need = REQUIRED_ROLE[decision]
    verb = "resolve the conflict of" if decision == "resolve_conflict" else decision
    if not actor:
        return Refusal(f"{decision} needs a named principal", forbidden=True)
    if not has_role(roles, need):
        return Refusal(f"'{actor}' may not {verb} an improvement: needs role {need} or above "
                       f"(has {', '.join(sorted(roles)) or 'none'})", forbidden=True)
    if system_wide and not (all_tenants and has_role(roles, "approver")):
        return Refusal(f"{what} is a system-wide change: only an all-tenant approver or admin may {verb} it",
                       forbidden=True)
    if decision == "approve" and actor == requested_by:
        return Refusal(f"'{actor}' requested {what} and cannot approve it too (four eyes)", forbidden=True)
    allowed = DECIDABLE[decision]
    if status not in allowed:
        why = "it is finished" if terminal else "of its state"
        return Refusal(f"cannot {verb} {what} in status '{status}' ({why}); "
                       f"{decision} applies to status {sorted(allowed)}", forbidden=False)
    return None
