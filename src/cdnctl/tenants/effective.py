"""A tenant's effective settings: every default applied, durations in seconds.

This is the per-tenant part of the bundle (see bundle.py), so its shape is a contract with
the edge's Lua code.
"""

from __future__ import annotations

from typing import Any

from cdnctl.tenants.canonical import canonical_json, sha256_tag
from cdnctl.tenants.model import METHODS, Tenant


def effective_tenant(tenant: Tenant) -> dict[str, Any]:
    """The tenant's settings as the bundle carries them, with their digest."""
    settings = _settings(tenant)
    settings["digest"] = sha256_tag(canonical_json(settings))
    return settings


_DIGEST_BEFORE = b',"domains":['  # "digest" sorts between "contact" and "domains"


def effective_fragment(tenant: Tenant) -> tuple[bytes, str]:
    """canonical_json(effective_tenant(tenant)) and the digest, serialised once: the
    digest's member is put into the JSON it is the digest of. (Strings escape their
    quotes, and no nested object has a "domains" key: the first `,"domains":[` is the
    top-level one.)"""
    text = canonical_json(_settings(tenant))
    digest = sha256_tag(text)
    at = text.index(_DIGEST_BEFORE)
    return text[:at] + b',"digest":"' + digest.encode() + b'"' + text[at:], digest


def _settings(tenant: Tenant) -> dict[str, Any]:
    origin = tenant.origin
    url = origin.parsed()
    auth = origin.basic_auth
    basic_auth: dict[str, str] | None = None
    if auth is not None:
        basic_auth = {"username": auth.username}
        if auth.password_env is not None:
            basic_auth["password_env"] = auth.password_env
        else:
            basic_auth["password_vault"] = str(auth.password)
    cache = tenant.cache
    if isinstance(cache.query_string, list):
        query = {"mode": "keep", "keep": sorted(set(cache.query_string))}
    else:
        query = {"mode": cache.query_string, "keep": []}
    rate = tenant.rate_limit
    settings: dict[str, Any] = {
        "id": tenant.id,
        "name": tenant.name or tenant.id,
        "contact": tenant.contact,
        "domains": sorted(set(tenant.domains)),
        "origin": {
            "url": origin.url,
            "scheme": url.scheme,
            "host": url.host,
            "port": url.port,
            "base_path": url.base_path,
            "host_header": origin.host_header or url.default_host_header,
            "tls_verify": origin.tls_verify,
            "connect_timeout": origin.connect_timeout,
            "read_timeout": origin.read_timeout,
            "basic_auth": basic_auth,
        },
        "cache": {
            "default_ttl": cache.default_ttl,
            "respect_origin": cache.respect_origin,
            "stale_if_error": cache.stale_if_error,
            "stale_while_revalidate": cache.stale_while_revalidate,
            "heuristic": cache.heuristic,
            "heuristic_max": cache.heuristic_max,
            "targeted_field": cache.targeted_field,
            "targeted_field_to_client": cache.targeted_field_to_client,
            "query_string": query,
            "rules": [
                {
                    "path": rule.path,
                    "ttl": rule.ttl,
                    "bypass": rule.bypass,
                    "cache_set_cookie": rule.cache_set_cookie,
                }
                for rule in cache.rules
            ],
        },
        "shield": tenant.shield,
        "methods": [method for method in METHODS if method in tenant.methods],
        "tls": {
            "certificate": tenant.tls.certificate,
            "cert_file": tenant.tls.cert_file,
            "key_vault": str(tenant.tls.key) if tenant.tls.key is not None else None,
            "redirect_http": tenant.tls.redirect_http,
        },
        "rate_limit": None
        if rate is None
        else {
            "requests_per_second": rate.requests_per_second,
            "burst": rate.requests_per_second if rate.burst is None else rate.burst,
        },
        "purge_tokens_env": sorted(set(tenant.purge_tokens_env)),
    }
    return settings
