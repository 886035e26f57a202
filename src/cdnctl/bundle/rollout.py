"""Preparing a fleet rollout (ansible/tenants.yml): the resolved bundle, resolved deltas
from the versions nodes run, and a smoke target."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdnctl.bundle.delta import Resolver, make_delta
from cdnctl.bundle.format import bundle_json, sha256_tag
from cdnctl.bundle.secrets import resolve_secrets

SMOKE_LABEL = "smoke"  # the label put in front of a wildcard domain to get a host name


def smoke_target(
    bundle: Mapping[str, Any], plan: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """(tenant, host) to send a smoke request for: the first tenant the plan adds or
    changes, else (no plan, or nothing changed) the first tenant; None without tenants."""
    tenants = bundle["tenants"]
    ids = sorted(tenants)
    if plan:
        changed = sorted(set(plan.get("added", [])) | set(plan.get("changed", {})))
        ids = [tenant for tenant in changed if tenant in tenants] or ids
    if not ids:
        return None
    domain = tenants[ids[0]]["domains"][0]
    host = f"{SMOKE_LABEL}{domain[1:]}" if domain.startswith("*.") else domain
    return ids[0], host


def write_resolved(
    bundle: Mapping[str, Any],
    environ: Mapping[str, str],
    out: Path,
    vault_secret: str | None,
) -> str:
    """Resolve secrets (SecretResolutionError if any is missing) into a new 0600 file;
    returns the SHA-256 of its bytes (what an edge reports as `content` once it runs it)."""
    resolved = bundle_json(resolve_secrets(dict(bundle), environ, vault_secret=vault_secret))
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(resolved)
    return sha256_tag(resolved)


def load_plan(text: str | None) -> dict[str, Any] | None:
    """The JSON of `cdnctl plan --format json`, or None when no plan could be made."""
    if not text or not text.strip():
        return None
    plan = json.loads(text)
    return plan if isinstance(plan, dict) else None


def write_deltas(
    bundle: bytes,
    manifest: bytes | None,
    bases: Mapping[str, bytes | None],
    resolver: Resolver,
    out: Path,
) -> dict[str, str]:
    """For each base version whose manifest is known (and the target's is): the resolved
    delta from it, in a new 0600 file next to `out`, when it is smaller than the bundle.
    Returns base -> file."""
    written: dict[str, str] = {}
    if manifest is None:
        return written
    for base, base_manifest in sorted(bases.items()):
        if base_manifest is None:
            continue
        delta = make_delta(bundle, manifest, base_manifest, base, resolver=resolver)
        if len(delta.body) >= len(bundle):
            continue
        path = out.with_name(f"{out.stem}.delta-{base.removeprefix('sha256:')[:16]}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(delta.body)
        written[base] = str(path)
    return written
