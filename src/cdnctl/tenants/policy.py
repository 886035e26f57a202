"""Platform policy: the fleet-wide rules a tenant file is judged by, per environment.

Read from `inventories/<env>/group_vars/all/cdn.yml`, key `cdn_tenant_policy`, so the same
file that configures the environment for Ansible also sets its GitOps gate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

POLICY_FILE = Path("group_vars/all/cdn.yml")
POLICY_KEY = "cdn_tenant_policy"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_private_origins: bool = Field(
        False, description="Allow origins on loopback/private networks (the local lab only)."
    )
    max_file_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    max_domains_per_tenant: int = Field(100, ge=1, le=10000)
    blocked_origin_hosts: list[str] = Field(
        default_factory=list, description="Extra origin host names no tenant may use."
    )

    def fingerprint(self) -> str:
        """Changes whenever a setting changes: part of the compile cache key."""
        dumped = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(dumped).hexdigest()[:16]


class PolicyError(ValueError):
    pass


def load_policy(inventory: Path | None) -> Policy:
    """The policy of an inventory directory, or the strict defaults when there is none."""
    if inventory is None:
        return Policy()
    path = inventory / POLICY_FILE
    if not inventory.is_dir():
        raise PolicyError(f"{inventory}: inventory directory not found")
    if not path.is_file():
        return Policy()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: top level must be a mapping")
    try:
        return Policy.model_validate(data.get(POLICY_KEY) or {})
    except ValidationError as exc:
        details = "; ".join(
            f"{POLICY_KEY}.{'.'.join(map(str, e['loc']))}: {e['msg']} (value: {e['input']!r})"
            for e in exc.errors()
        )
        raise PolicyError(f"{path}: {details}") from None
