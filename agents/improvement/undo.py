"""Undo one applied change through the actuator that made it, and verify it by reading the target back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from connectors.actuators.base import Actuator, AppliedChange, FingerprintMismatch
from connectors.actuators.fingerprint import fingerprint, verify
from streams.errors import ActuatorError

Outcome = Literal["undone", "conflict"]


class RollbackNotVerified(ActuatorError):
    """The actuator's undo returned, but reading the target back does not show the previous value."""


def actuator_for(actuators: Mapping[str, Actuator], change: AppliedChange, default: Actuator) -> Actuator:
    """The actuator that applied `change` (recorded on it); changes recorded before the actuator's
    name was kept go through the configured one."""
    return actuators.get(change.actuator, default) if change.actuator else default


def owned(current: str | None, change: AppliedChange) -> bool:
    """The target still holds what kaizen wrote (its fingerprint matches the one recorded at apply)."""
    return verify(current, change.fingerprint)


async def undo(act: Actuator, change: AppliedChange) -> Outcome:
    """Put the target back at `change.previous` (None: delete it) unless someone else changed it since.

    Returns "undone" once a read-back shows the previous value (also when it already did: idempotent),
    "conflict" when the target holds neither kaizen's value nor the previous one (left as it is).
    Actuator and network errors propagate (the caller retries); RollbackNotVerified when the read-back
    disagrees."""
    current = await act.read(change.key)
    if current == change.previous:
        return "undone"
    if not owned(current, change):
        return "conflict"
    try:
        await act.rollback(change)
    except FingerprintMismatch:
        return "conflict"
    back = await act.read(change.key)
    if back != change.previous:
        raise RollbackNotVerified(
            f"{change.key}: read back {fingerprint(back)} after rollback, expected the previous value "
            f"{fingerprint(change.previous)}")
    return "undone"
