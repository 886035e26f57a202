"""The bundle: the one document every edge and shield runs.

`cdnctl compile` writes it; the edge admin API (`POST /config`) takes it. It is plain JSON,
serialised canonically (sorted keys, no insignificant whitespace, UTF-8), so the same
tenants always give byte-identical bytes. One layout rule on top: each tenant sits on a line
of its own inside `tenants` (`bundle_json`), so an edge can take a 100k-tenant bundle apart
line by line and decode only the tenants that changed instead of the whole document.
`version` is the SHA-256 of the bundle's *manifest*: the canonical JSON of the bundle
without `version` and with every tenant replaced by its `digest` (itself the SHA-256 of
that tenant's canonical JSON). Any change to any byte of the bundle changes the version,
anyone holding the bundle can check it (`manifest_version`), and a compile need not hash
100 MB to version 100k tenants.

Shape (format 1)::

    {
      "format": 1,
      "version": "sha256:<64 hex>",
      "hosts":     {"cdn.customer-a.test": "customer-a", ...},   # exact host -> tenant id
      "wildcards": {"customer-c.test": "customer-c", ...},       # "*.customer-c.test" -> id
      "tenants": {
        "customer-a": {
          "id": "customer-a", "name": "...", "contact": "...",
          "domains": ["cdn.customer-a.test"],                     # normalised, sorted
          "origin": {
            "url": "https://origin.customer-a.test/static",
            "scheme": "https", "host": "origin.customer-a.test", "port": 443,
            "base_path": "/static",                               # "" when none
            "host_header": "origin.customer-a.test",
            "tls_verify": true, "connect_timeout": 5, "read_timeout": 30,
            "basic_auth": null | {"username": "cdn", "password_env": "VAR"}
                               | {"username": "cdn", "password_vault": "$ANSIBLE_VAULT;..."}
          },
          "cache": {
            "default_ttl": 3600, "respect_origin": true,
            "stale_if_error": 86400, "stale_while_revalidate": 0,
            "heuristic": false, "heuristic_max": 86400,         # RFC 9111 §4.2.2
            "targeted_field": null | "Cdnctl-Cache-Control",    # RFC 9213, obeyed first
            "targeted_field_to_client": false,
            "query_string": {"mode": "all" | "ignore" | "keep", "keep": ["a", "b"]},
            "rules": [{"path": "/api/*", "ttl": null | 0.., "bypass": false,
                       "cache_set_cookie": false}]                # ordered, first match wins
          },
          "shield": true,
          "methods": ["GET", "HEAD", "OPTIONS"],                  # others: 405
          "tls": {"certificate": "acme" | "custom" | "none",
                  "cert_file": null | "path", "key_vault": null | "$ANSIBLE_VAULT;...",
                  "redirect_http": false},
          "rate_limit": null | {"requests_per_second": 100, "burst": 200},
          "purge_tokens_env": ["VAR", ...],
          "digest": "sha256:<hex of this tenant's canonical JSON without digest>"
        }
      }
    }

Durations are whole seconds. Secrets are never in a compiled bundle: only the *names* of the
environment variables (or vault strings) that hold them. `cdnctl apply` resolves them just
before sending (see `resolve_secrets`), replacing `basic_auth` with
`{"username": ..., "authorization": "Basic <base64>"}` and `purge_tokens_env` with
`purge_token_sha256: [hex, ...]`; `version` stays the compiled one.
"""

from __future__ import annotations

from typing import Any

from cdnctl.tenants.canonical import canonical_json, sha256_tag

BUNDLE_FORMAT = 1

__all__ = [
    "BUNDLE_FORMAT",
    "bundle_json",
    "canonical_json",
    "manifest_bytes",
    "manifest_version",
    "sha256_tag",
]

TENANTS_OPEN = b'"tenants":{'


def bundle_json(bundle: dict[str, Any]) -> bytes:
    """The bundle's wire form: canonical JSON, each tenant on its own line.

    `{"format":1,"hosts":{...},"tenants":{\n"a":{...},\n"b":{...}\n},"version":...}`: the
    line breaks are insignificant whitespace, so `json.loads` reads it as usual, and
    compact JSON never contains a raw newline anywhere else.
    """
    skeleton = canonical_json({**bundle, "tenants": {}})
    at = skeleton.index(TENANTS_OPEN + b"}") + len(TENANTS_OPEN)
    lines = b",".join(
        b"\n" + canonical_json(tenant_id) + b":" + canonical_json(tenant)
        for tenant_id, tenant in sorted(bundle["tenants"].items())
    )
    return skeleton[:at] + lines + b"\n" + skeleton[at:]


def manifest_bytes(bundle: dict[str, Any]) -> bytes:
    """The bundle's manifest (see above): what its version is the SHA-256 of."""
    manifest = {key: value for key, value in bundle.items() if key != "version"}
    manifest["tenants"] = {
        tenant_id: tenant["digest"] for tenant_id, tenant in bundle["tenants"].items()
    }
    return canonical_json(manifest)


def manifest_version(bundle: dict[str, Any]) -> str:
    """The version a bundle must carry (see above)."""
    return sha256_tag(manifest_bytes(bundle))
