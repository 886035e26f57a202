"""resolve_secrets: env and ansible-vault passwords, purge tokens, clear errors."""

from __future__ import annotations

import base64
import hashlib

import pytest

from cdnctl.bundle.secrets import SecretResolutionError, resolve_secrets
from cdnctl.bundle.synthetic import make_bundle, tenant


def compiled(**auth: str) -> dict:
    bundle = make_bundle(tenant("a", ["a.test"], "127.0.0.1:1"), tenant("b", ["b.test"], "h:2"))
    bundle["tenants"]["a"]["origin"]["basic_auth"] = {"username": "cdn", **auth}
    for t in bundle["tenants"].values():
        del t["purge_token_sha256"]
        t["purge_tokens_env"] = []
    bundle["tenants"]["b"]["purge_tokens_env"] = ["B_TOKEN"]
    return bundle


def test_env_password_and_purge_tokens_are_resolved():
    bundle = compiled(password_env="A_PASSWORD")
    resolved = resolve_secrets(bundle, {"A_PASSWORD": "pw", "B_TOKEN": "tok"})
    auth = resolved["tenants"]["a"]["origin"]["basic_auth"]
    assert auth == {
        "username": "cdn",
        "authorization": "Basic " + base64.b64encode(b"cdn:pw").decode(),
    }
    assert resolved["tenants"]["b"]["purge_token_sha256"] == [hashlib.sha256(b"tok").hexdigest()]
    assert "purge_tokens_env" not in resolved["tenants"]["b"]
    assert resolved["version"] == bundle["version"]
    assert bundle["tenants"]["a"]["origin"]["basic_auth"]["password_env"] == "A_PASSWORD"


def test_missing_variables_are_all_named():
    with pytest.raises(SecretResolutionError) as info:
        resolve_secrets(compiled(password_env="A_PASSWORD"), {})
    problems = info.value.problems
    assert any("tenant a" in p and "basic_auth.password_env" in p and "A_PASSWORD" in p
               for p in problems)  # fmt: skip
    assert any("tenant b" in p and "purge_tokens_env" in p and "B_TOKEN" in p for p in problems)


def test_vault_password_needs_the_vault_secret_and_decrypts_with_it():
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(b"vault-pass"))])
    vaulted = vault.encrypt(b"from-vault").decode()
    bundle = compiled(password_vault=vaulted)
    env = {"B_TOKEN": "t"}
    with pytest.raises(SecretResolutionError, match="vault password"):
        resolve_secrets(bundle, env)
    with pytest.raises(SecretResolutionError, match="cannot decrypt"):
        resolve_secrets(bundle, env, vault_secret="wrong")
    resolved = resolve_secrets(bundle, env, vault_secret="vault-pass")
    assert resolved["tenants"]["a"]["origin"]["basic_auth"]["authorization"] == (
        "Basic " + base64.b64encode(b"cdn:from-vault").decode()
    )
