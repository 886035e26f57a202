"""Resolved bundles built by hand, for data-plane tests and benchmarks (follows bundle.format)."""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

from cdnctl.bundle.format import (
    BUNDLE_FORMAT,
    bundle_json,
    canonical_json,
    manifest_version,
    sha256_tag,
)


def tenant(
    tenant_id: str,
    domains: list[str],
    origin: str,
    *,
    scheme: str = "http",
    base_path: str = "",
    host_header: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    default_ttl: int = 3600,
    respect_origin: bool = True,
    stale_if_error: int = 86400,
    stale_while_revalidate: int = 0,
    heuristic: bool = False,
    heuristic_max: int = 86400,
    targeted_field: str | None = None,
    targeted_field_to_client: bool = False,
    query_mode: str = "all",
    query_keep: list[str] | None = None,
    rules: list[dict[str, Any]] | None = None,
    shield: bool = False,
    methods: list[str] | None = None,
    rate_limit: dict[str, int] | None = None,
    purge_tokens: list[str] | None = None,
    read_timeout: int = 30,
    tls_verify: bool = True,
) -> dict[str, Any]:
    """One tenant in its resolved form (secrets already replaced)."""
    host, _, port = origin.rpartition(":")
    doc: dict[str, Any] = {
        "id": tenant_id,
        "name": tenant_id.title(),
        "contact": f"ops@{tenant_id}.test",
        "domains": sorted(domains),
        "origin": {
            "url": f"{scheme}://{origin}{base_path}",
            "scheme": scheme,
            "host": host,
            "port": int(port),
            "base_path": base_path,
            "host_header": host_header or host,
            "tls_verify": tls_verify,
            "connect_timeout": 5,
            "read_timeout": read_timeout,
            "basic_auth": None
            if basic_auth is None
            else {
                "username": basic_auth[0],
                "authorization": "Basic "
                + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode(),
            },
        },
        "cache": {
            "default_ttl": default_ttl,
            "respect_origin": respect_origin,
            "stale_if_error": stale_if_error,
            "stale_while_revalidate": stale_while_revalidate,
            "heuristic": heuristic,
            "heuristic_max": heuristic_max,
            "targeted_field": targeted_field,
            "targeted_field_to_client": targeted_field_to_client,
            "query_string": {"mode": query_mode, "keep": sorted(query_keep or [])},
            "rules": [
                {"ttl": None, "bypass": False, "cache_set_cookie": False, **rule}
                for rule in (rules or [])
            ],
        },
        "shield": shield,
        "methods": methods or ["GET", "HEAD", "OPTIONS"],
        "tls": {"certificate": "none", "cert_file": None, "key_vault": None},
        "rate_limit": rate_limit,
        "purge_token_sha256": sorted(
            hashlib.sha256(token.encode()).hexdigest() for token in (purge_tokens or [])
        ),
    }
    doc["digest"] = sha256_tag(canonical_json(doc))
    return doc


def make_bundle(*tenants: dict[str, Any]) -> dict[str, Any]:
    hosts: dict[str, str] = {}
    wildcards: dict[str, str] = {}
    for t in tenants:
        for domain in t["domains"]:
            if domain.startswith("*."):
                wildcards[domain[2:]] = t["id"]
            else:
                hosts[domain] = t["id"]
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "hosts": dict(sorted(hosts.items())),
        "wildcards": dict(sorted(wildcards.items())),
        "tenants": {t["id"]: copy.deepcopy(t) for t in sorted(tenants, key=lambda t: t["id"])},
    }
    bundle["version"] = manifest_version(bundle)
    return bundle


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    return bundle_json(bundle)
