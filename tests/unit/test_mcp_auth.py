"""Tokens, roles and tenant scoping of the MCP server (pure: no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_server.auth import AuthError, Principal, TokenConfigError, build_token_store, load_tokens_file
from streams.settings import Settings

TOKEN_A = "tok-alice-0123456789abcdef"


def test_tokens_file_json_and_yaml(tmp_path: Path) -> None:
    spec = {TOKEN_A: {"principal": "alice", "tenants": ["t1"], "roles": ["approver"]},
            "tok-ops-0123456789abcdef": {"principal": "ops", "tenants": "*", "roles": ["reader"]}}
    jf = tmp_path / "tokens.json"
    jf.write_text(json.dumps(spec))
    yf = tmp_path / "tokens.yaml"
    yf.write_text(f"{TOKEN_A}:\n  principal: alice\n  tenants: [t1]\n  roles: [approver]\n")
    assert load_tokens_file(jf)[TOKEN_A] == load_tokens_file(yf)[TOKEN_A] == Principal(
        "alice", frozenset({"t1"}), frozenset({"approver"}))
    assert load_tokens_file(jf)["tok-ops-0123456789abcdef"].all_tenants


@pytest.mark.parametrize("entry, msg", [
    ({"tenants": ["t"]}, "principal"),
    ({"principal": "x", "tenants": "t1"}, "tenants must be a list"),
    ({"principal": "x", "tenants": ["t"], "roles": ["god"]}, "unknown roles"),
])
def test_bad_tokens_file_entries_are_explained(tmp_path: Path, entry: dict[str, object], msg: str) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({TOKEN_A: entry}))
    with pytest.raises(TokenConfigError, match=msg):
        load_tokens_file(f)


def test_store_lookup_api_key_file_and_generated(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({TOKEN_A: {"principal": "alice", "tenants": ["t1"], "roles": ["reader"]}}))
    store = build_token_store(Settings.model_validate({"self_building_mcp_api_key": "admin-key-0123456789",
                                                       "self_building_mcp_tokens_file": str(f)}))
    assert store.lookup("admin-key-0123456789") == Principal("admin", None, frozenset({"admin"}))
    assert store.lookup(TOKEN_A) is not None and store.lookup(TOKEN_A).name == "alice"  # type: ignore[union-attr]
    assert store.lookup("admin-key-012345678") is None and store.lookup("") is None and store.lookup(None) is None
    assert store.generated_token is None
    empty = build_token_store(Settings.model_validate({}))
    assert empty.generated_token and empty.lookup(empty.generated_token).has_role("admin")  # type: ignore[union-attr]
    assert len(build_token_store(Settings.model_validate({}), generate_if_empty=False)) == 0


def test_roles_imply_lesser_roles_and_tenants_are_enforced() -> None:
    p = Principal("bob", frozenset({"t1"}), frozenset({"approver"}))
    assert p.has_role("operator") and p.has_role("reader") and not p.has_role("admin")
    assert p.can_see("t1") and not p.can_see("t2") and not p.can_see(None)
    assert p.default_tenant() == "t1"
    with pytest.raises(AuthError, match="tenant 't2' is not accessible"):
        p.check_tenant("t2")
    with pytest.raises(AuthError, match="needs role admin"):
        p.require_role("admin", action="x")
    assert Principal.from_claims(p.to_claims()) == p
    admin = Principal("root", None, frozenset({"admin"}))
    assert admin.can_see(None) and admin.has_role("approver") and Principal.from_claims(admin.to_claims()) == admin
