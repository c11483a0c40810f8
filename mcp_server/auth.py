"""Bearer-token identities for the MCP server: who is calling, which tenants they see, what they may do."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastmcp.server.auth import TokenVerifier
from fastmcp.server.auth.auth import AccessToken

from streams.decisions import ROLES, effective_roles
from streams.errors import AccessDenied, ConfigError
from streams.settings import Settings

ALL_TENANTS = "*"
STDIO_TOKEN_ENV = "KAIZEN_MCP_TOKEN"  # the token the stdio process owner presents (falls back to the API key)


class AuthError(AccessDenied):
    """The caller is not allowed to do or see this (raised as a clear tool error / HTTP 403)."""


class TokenConfigError(ConfigError):
    """The tokens file is unreadable or malformed."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a name, the tenants it may see (None = all) and its roles."""

    name: str
    tenants: frozenset[str] | None
    roles: frozenset[str] = field(default_factory=lambda: frozenset({"reader"}))

    @property
    def all_tenants(self) -> bool:
        return self.tenants is None

    def effective_roles(self) -> frozenset[str]:
        return effective_roles(self.roles)

    def has_role(self, *roles: str) -> bool:
        eff = self.effective_roles()
        return any(r in eff for r in roles)

    def require_role(self, *roles: str, action: str) -> None:
        if not self.has_role(*roles):
            raise AuthError(
                f"'{self.name}' may not {action}: needs role {' or '.join(roles)} "
                f"(has {', '.join(sorted(self.roles)) or 'none'})"
            )

    def can_see(self, tenant_id: str | None) -> bool:
        """True if this caller may see data of the tenant (None = system-wide data: all-tenant callers only)."""
        if self.tenants is None:
            return True
        return tenant_id is not None and tenant_id in self.tenants

    def can_see_any(self, tenant_ids: Iterable[str | None]) -> bool:
        return any(self.can_see(t) for t in tenant_ids)

    def check_tenant(self, tenant_id: str | None) -> None:
        """Refuse an explicit foreign tenant with a message that says what is allowed."""
        if tenant_id is None or self.can_see(tenant_id):
            return
        allowed = ", ".join(sorted(self.tenants or ()))
        raise AuthError(f"tenant '{tenant_id}' is not accessible with this token (allowed tenants: {allowed})")

    def default_tenant(self) -> str | None:
        """The tenant a scoped caller acts on when it names none (only if it has exactly one)."""
        if self.tenants is not None and len(self.tenants) == 1:
            return next(iter(self.tenants))
        return None

    def to_claims(self) -> dict[str, Any]:
        return {"principal": self.name, "tenants": ALL_TENANTS if self.tenants is None else sorted(self.tenants),
                "roles": sorted(self.roles)}

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        tenants = claims.get("tenants", [])
        return cls(str(claims.get("principal", "unknown")),
                   None if tenants == ALL_TENANTS else frozenset(str(t) for t in tenants),
                   frozenset(str(r) for r in claims.get("roles", [])))


def _parse_entry(token: str, spec: Any) -> Principal:
    if not isinstance(spec, Mapping):
        raise TokenConfigError(f"token entry must be a mapping with principal/tenants/roles, got {type(spec).__name__}")
    name = spec.get("principal")
    if not isinstance(name, str) or not name:
        raise TokenConfigError("every token entry needs a non-empty 'principal'")
    tenants_raw = spec.get("tenants", [])
    if tenants_raw == ALL_TENANTS:
        tenants: frozenset[str] | None = None
    elif isinstance(tenants_raw, list) and all(isinstance(t, str) for t in tenants_raw):
        tenants = frozenset(tenants_raw)
    else:
        raise TokenConfigError(f"'{name}': tenants must be a list of tenant ids or \"*\"")
    roles_raw = spec.get("roles", ["reader"])
    if isinstance(roles_raw, str):
        roles_raw = [roles_raw]
    bad = [r for r in roles_raw if r not in ROLES]
    if bad or not roles_raw:
        raise TokenConfigError(f"'{name}': unknown roles {bad}; use some of {list(ROLES)}")
    if len(token) < 16:
        raise TokenConfigError(f"'{name}': tokens must be at least 16 characters")
    return Principal(name, tenants, frozenset(roles_raw))


def load_tokens_file(path: Path) -> dict[str, Principal]:
    """Read a JSON or YAML mapping token → {principal, tenants: [..] | "*", roles: [..]}."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenConfigError(f"cannot read tokens file {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TokenConfigError(f"tokens file {path} is not valid JSON/YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise TokenConfigError(f"tokens file {path} must be a mapping token → entry")
    return {str(tok): _parse_entry(str(tok), spec) for tok, spec in data.items()}


class TokenStore:
    """Token → Principal, looked up in constant time per token (hmac.compare_digest over all tokens)."""

    def __init__(self, entries: Mapping[str, Principal], generated_token: str | None = None) -> None:
        self._entries = [(tok.encode(), p) for tok, p in entries.items()]
        self.generated_token = generated_token

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str | None) -> Principal | None:
        if not token:
            return None
        given = token.encode()
        found: Principal | None = None
        for tok, principal in self._entries:  # no early exit: timing does not reveal which token matched
            if hmac.compare_digest(tok, given):
                found = principal
        return found


def build_token_store(settings: Settings, *, generate_if_empty: bool = True) -> TokenStore:
    """The tokens of SELF_BUILDING_MCP_API_KEY (admin, all tenants) and SELF_BUILDING_MCP_TOKENS_FILE.

    With neither configured, a random admin token is generated for this process (printed by the
    server at start) so that `make run` works with nothing configured and the server is never open.
    """
    entries: dict[str, Principal] = {}
    if settings.self_building_mcp_api_key:
        entries[settings.self_building_mcp_api_key] = Principal("admin", None, frozenset({"admin"}))
    if settings.self_building_mcp_tokens_file:
        entries.update(load_tokens_file(Path(settings.self_building_mcp_tokens_file)))
    generated = None
    if not entries and generate_if_empty:
        generated = "kz-" + secrets.token_urlsafe(24)
        entries[generated] = Principal("admin", None, frozenset({"admin"}))
    return TokenStore(entries, generated)


def stdio_principal(store: TokenStore, settings: Settings) -> Principal:
    """stdio mode: the process owner is the caller, identified by KAIZEN_MCP_TOKEN (or the API key)."""
    token = os.environ.get(STDIO_TOKEN_ENV) or settings.self_building_mcp_api_key
    principal = store.lookup(token)
    if principal is None:
        raise AuthError(
            f"stdio mode needs a valid token: set {STDIO_TOKEN_ENV} to a token of the tokens file "
            "or SELF_BUILDING_MCP_API_KEY"
        )
    return principal


class KaizenTokenVerifier(TokenVerifier):
    """FastMCP verifier: a bearer token of the store becomes an AccessToken carrying the principal."""

    def __init__(self, store: TokenStore) -> None:
        super().__init__()
        self.store = store

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = self.store.lookup(token)
        if principal is None:
            return None
        return AccessToken(token=token, client_id=principal.name, scopes=sorted(principal.roles),
                           claims=principal.to_claims())


def principal_of(access: AccessToken | None) -> Principal | None:
    if access is None or not access.claims or "principal" not in access.claims:
        return None
    return Principal.from_claims(access.claims)


UNAUTHORIZED_BODY = (b'{"error":"invalid_token","error_description":"missing or invalid bearer token: send '
                     b'Authorization: Bearer <token> with SELF_BUILDING_MCP_API_KEY or a token of '
                     b'SELF_BUILDING_MCP_TOKENS_FILE"}')


class PlainUnauthorized:
    """ASGI wrapper of the MCP endpoint: a refused token is a plain 401 with a JSON reason and no
    WWW-Authenticate challenge. kaizen has no OAuth server, and a challenge (with resource metadata) sends
    MCP clients such as the Inspector into an OAuth flow instead of reporting "401 Unauthorized"."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def _send(message: Any) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused = True
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode())]})
                await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
                return
            if refused:
                return  # the wrapped app's own body of the 401 was replaced above
            await send(message)

        await self.app(scope, receive, _send)
