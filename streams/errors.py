"""One exception tree: `KaizenError` and the few kinds a caller branches on.

Every exception kaizen raises on purpose derives from one of these kinds; a caller decides what to do
by the kind, not by the module that raised it:

- ConfigError       the deployment is misconfigured (settings, tokens file, provider choice): fix and restart.
- InputError        a caller's argument or a record is wrong: answer the caller / dead-letter the record.
  - BadRecord       a record read from a topic that does not parse or validate (dead-lettered with the reason).
- AccessDenied      the principal may not do this (MCP answers it as a tool error / HTTP 403).
- ConflictError     the state moved under us: an illegal lifecycle step, a target changed by someone else.
- ExternalError     an outside system (AWS, an LLM, git, the embedded stack) failed the request.
  - ProviderError   the LLM provider failed.
  - ActuatorError   an actuator could not apply or undo a change.
  - TransientError  worth trying again later (throttling, 5xx, timeouts, an open circuit breaker).

Kinds keep the builtin base the classes they replace had (ValueError / RuntimeError), so an existing
`except ValueError` around parsing still catches a BadRecord.
"""

from __future__ import annotations


class KaizenError(Exception):
    """Root of every error kaizen raises on purpose."""


class ConfigError(KaizenError, ValueError):
    """The deployment is misconfigured; the message names the setting to fix."""


class InputError(KaizenError, ValueError):
    """An argument or record the sender must fix; the message says what is wrong."""


class BadRecord(InputError):
    """A record on a topic that cannot be used; `reason` is the short dead-letter reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AccessDenied(KaizenError):
    """The principal is not allowed to do or see this."""


class ConflictError(KaizenError):
    """The state is not what the request assumed (illegal transition, target changed by someone else)."""


class ExternalError(KaizenError, RuntimeError):
    """An outside system failed the request."""


class TransientError(ExternalError):
    """A failure worth retrying later: throttling, 5xx, a timeout, an open circuit breaker."""


class ProviderError(ExternalError):
    """The LLM provider refused or failed the request."""


class ActuatorError(ExternalError):
    """An actuator (SSM, config topic, git) could not apply, read or undo a change."""
