"""Resolve the secrets a compiled bundle only names, just before it is sent to an edge.

A compiled bundle carries environment-variable names and ansible-vault strings, never
plaintext (see `cdnctl.bundle`). `resolve_secrets` returns a copy where
`origin.basic_auth` becomes `{"username", "authorization": "Basic <base64>"}` and
`purge_tokens_env` becomes `purge_token_sha256`; `version` stays the compiled one. Every
missing secret is reported at once (tenant, field, variable) and nothing is resolved.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping
from typing import Any

VAULT_PASSWORD_ENV = "CDNCTL_VAULT_PASSWORD"  # where the ansible-vault password comes from


class SecretResolutionError(ValueError):
    """One or more secrets could not be resolved; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot resolve secrets:\n  " + "\n  ".join(problems))


def decrypt_vault(vaulted: str, vault_secret: str) -> str:
    # Imported lazily: ansible is a dev/ops dependency, not needed for env-only secrets.
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(vault_secret.encode()))])
    return vault.decrypt(vaulted.strip().encode()).decode()


def _password(
    tenant_id: str, auth: Mapping[str, Any], environ: Mapping[str, str], vault_secret: str | None
) -> tuple[str | None, str | None]:
    """(password, problem) for one basic_auth block."""
    field = f"tenant {tenant_id}: origin.basic_auth"
    if auth.get("password_env"):
        name = auth["password_env"]
        if name not in environ:
            return None, f"{field}.password_env: environment variable {name} is not set"
        return environ[name], None
    if auth.get("password_vault"):
        if vault_secret is None:
            return None, (
                f"{field}.password_vault: an ansible-vault string needs the vault password "
                f"(set {VAULT_PASSWORD_ENV} or pass --vault-password-file)"
            )
        try:
            return decrypt_vault(auth["password_vault"], vault_secret), None
        except Exception as exc:  # ansible raises AnsibleError subclasses
            return None, f"{field}.password_vault: cannot decrypt: {exc}"
    return None, f"{field}: needs password_env or password_vault"


def resolve_secrets(
    bundle: dict[str, Any],
    environ: Mapping[str, str],
    *,
    vault_secret: str | None = None,
) -> dict[str, Any]:
    """A copy of `bundle` with every secret resolved, or SecretResolutionError."""
    resolved = copy.deepcopy(bundle)
    problems: list[str] = []
    for tenant_id, tenant in sorted(resolved.get("tenants", {}).items()):
        auth = tenant.get("origin", {}).get("basic_auth")
        if auth and "authorization" not in auth:
            password, problem = _password(tenant_id, auth, environ, vault_secret)
            if problem:
                problems.append(problem)
            else:
                credentials = f"{auth['username']}:{password}".encode()
                tenant["origin"]["basic_auth"] = {
                    "username": auth["username"],
                    "authorization": "Basic " + base64.b64encode(credentials).decode(),
                }
        if "purge_tokens_env" in tenant:
            hashes = []
            for name in tenant["purge_tokens_env"]:
                if name not in environ:
                    problems.append(
                        f"tenant {tenant_id}: purge_tokens_env: environment variable {name} "
                        "is not set"
                    )
                else:
                    hashes.append(hashlib.sha256(environ[name].encode()).hexdigest())
            del tenant["purge_tokens_env"]
            tenant["purge_token_sha256"] = sorted(hashes)
    if problems:
        raise SecretResolutionError(problems)
    return resolved
