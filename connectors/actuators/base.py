"""The actuator interface (read / apply / rollback with stored previous version) and the key scheme.

Key scheme.  A logical key is `<tenant>/<component>/<parameter>` (a file path for the git actuator).
A deployment `target` inserts one segment before the last one, so a canary never overwrites the
full rollout:
  full:    SSM `/kaizen/acme/checkout/cache_size`         Kafka `acme/checkout/cache_size`
  canary:  SSM `/kaizen/acme/checkout/canary/cache_size`  Kafka `acme/checkout/canary/cache_size`
  git:     `svc/cache.py` → `svc/canary/cache.py`
The service reads the canary key for its canary share of traffic (CANARY_FRACTION, 10 % by default)
and the plain key for the rest.  The deploy agent applies to target="canary", monitors, then applies
the same value with target=None (all traffic) and rolls the canary key back.  Routing weights
(`routing.<target>`) are ordinary parameters and can carry a weighted rollout instead.

Identifiers.  Tenant and component ids, deployment targets and parameter segments are validated
before a key is built (IDENTIFIER: ASCII letters, digits, `_`, `.`, `-`; first a letter or digit;
at most 63 characters; case is kept, as SSM and Lambda names keep it), so no id can add a path
segment or climb out of one: a component
`api/canary` would otherwise write the canary key of `api`.  A parameter may be dotted
(`feature_flags.circuit_breaker`) but never contain `/`.  Anything else raises InvalidIdentifier
with the reason (see the README, "Improvement cycle").
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

from connectors.actuators.fingerprint import fingerprint
from streams.errors import ConflictError, InputError


class FingerprintMismatch(ConflictError, RuntimeError):
    """The artefact changed since kaizen applied it: someone else owns it now; rollback refused."""


IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
RESERVED_SEGMENTS = frozenset({"canary", "_applied"})  # key segments kaizen itself inserts


class InvalidIdentifier(InputError):
    """A tenant, component, target or parameter name from which no safe key can be built."""


def check_identifier(value: str, what: str) -> str:
    """`value` if it matches IDENTIFIER (see the module docstring); else InvalidIdentifier saying why."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise InvalidIdentifier(
            f"{what} {value!r} is not a valid identifier: use 1-63 characters of A-Z a-z 0-9 _ . - "
            "starting with a letter or digit (no '/', spaces or other characters)")
    return value


def logical_key(tenant_id: str, component: str, parameter: str) -> str:
    """`<tenant>/<component>/<parameter>` from validated identifiers (InvalidIdentifier otherwise)."""
    check_identifier(tenant_id, "tenant")
    check_identifier(component, "component")
    check_identifier(parameter, "parameter")
    for what, value in (("tenant", tenant_id), ("component", component)):
        if value in RESERVED_SEGMENTS:
            raise InvalidIdentifier(f"{what} {value!r} is reserved (kaizen uses it as a key segment)")
    return f"{tenant_id}/{component}/{parameter}"


def check_key(key: str) -> str:
    """A full logical key (`tenant/component[/target]/parameter`): every segment a valid identifier."""
    parts = key.split("/")
    if len(parts) < 3:
        raise InvalidIdentifier(f"key {key!r} is not <tenant>/<component>/<parameter>")
    for part in parts:
        check_identifier(part, f"key segment of {key!r}:")
    return key


def target_key(key: str, target: str | None) -> str:
    """Insert the deployment target before the last segment (see the module docstring)."""
    if not target:
        return key
    check_identifier(target, "deployment target")
    head, sep, last = key.rpartition("/")
    return f"{head}/{target}/{last}" if sep else f"{target}/{last}"


def encode_value(value: float | int | str | bool) -> str:
    """Parameter values as strings: booleans `true`/`false`, integral floats without `.0`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class AppliedChange:
    """What an apply did: enough to verify and undo it later (stored on the improvement's deployment)."""

    key: str  # the actuator's full key (SSM name, Kafka key, file path), target included
    previous: str | None  # None: there was no value / file before
    new: str
    fingerprint: str  # of `new`, recorded at apply time
    improvement_id: str
    target: str | None = None
    version: str | None = None  # SSM version, Kafka offset or git commit of the apply
    noop: bool = False  # the same improvement was already applied: nothing was written
    actuator: str = ""  # the actuator's name (ssm, kafka_config, git): rollback goes through the same one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppliedChange:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def applied(key: str, previous: str | None, new: str, improvement_id: str, target: str | None,
            version: str | None = None, noop: bool = False) -> AppliedChange:
    return AppliedChange(key, previous, new, fingerprint(new), improvement_id, target, version, noop)


class Actuator(ABC):
    """Applies one value to one key, remembering the previous one; undoes it only if still its own."""

    name: str = "actuator"

    @abstractmethod
    async def read(self, key: str) -> str | None:
        """The current value of a full key (None when absent)."""

    @abstractmethod
    async def apply(self, key: str, value: str, improvement_id: str, target: str | None = None) -> AppliedChange:
        """Store the previous value, write the new one; applying the same improvement twice is a no-op."""

    @abstractmethod
    async def rollback(self, change: AppliedChange) -> None:
        """Restore `change.previous`; raise FingerprintMismatch if the current value is not `change.new`."""

    def full_key(self, key: str, target: str | None) -> str:
        return target_key(key, target)
