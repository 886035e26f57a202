"""Tenant YAML v1: one customer per file, `tenants/<id>.yaml`.

The pydantic models here ARE the schema: `tenants/schema.json` is generated from them and
validation errors come from them. Field names are a contract (the compiler, the edge and
the docs rely on them): add fields, never rename.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from cdnctl.tenants.domains import check_domain
from cdnctl.tenants.durations import parse_duration
from cdnctl.tenants.origins import OriginUrl, parse_origin_url, split_origin_url
from cdnctl.tenants.problems import InputError
from cdnctl.tenants.yaml_loader import is_vault_string

TENANT_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# Ids the platform keeps for itself: "platform" is the platform wildcard certificate's entry on
# every edge (fleet.certificates.PLATFORM).
PLATFORM_CERTIFICATE_ID = "platform"
RESERVED_TENANT_IDS = frozenset({PLATFORM_CERTIFICATE_ID})
ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
DAY = 86400
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
_GLOB = re.compile(r"^[/*][\x21-\x7e]{0,1023}$")


def duration(maximum: int, minimum: int = 0) -> Any:
    """A duration field: int seconds or '30s'/'5m'/'1h'/'7d', bounded, stored as seconds."""
    return Annotated[
        int,
        BeforeValidator(lambda v: parse_duration(v, maximum=maximum, minimum=minimum)),
        WithJsonSchema(
            {
                "oneOf": [
                    {"type": "integer", "minimum": minimum, "maximum": maximum},
                    {"type": "string", "pattern": r"^\d+[smhd]$"},
                ],
                "description": f"seconds, or a number with s/m/h/d ({minimum}s to {maximum}s)",
            }
        ),
    ]


def _vault_only(value: object) -> object:
    if value is not None and not is_vault_string(value):
        raise InputError(
            "plaintext secret in a tenant file",
            "encrypt it with `ansible-vault encrypt_string` (a `!vault |` value) or use "
            "password_env with the name of an environment variable",
        )
    return value


VaultSecret = Annotated[
    str,
    BeforeValidator(_vault_only),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "an ansible-vault string (!vault |)"}),
]


def _domain(value: object) -> str:
    if not isinstance(value, str):
        raise InputError("domain must be a string", "write e.g. cdn.example.com")
    return check_domain(value)


Domain = Annotated[
    str,
    BeforeValidator(_domain),
    WithJsonSchema({"type": "string", "description": "FQDN, lowercase; '*.' first label ok"}),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BasicAuth(Strict):
    username: Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^:\s]+$")]
    password_env: Annotated[str, Field(pattern=ENV_NAME_PATTERN)] | None = Field(
        None, description="Name of the environment variable holding the password at apply time."
    )
    password: VaultSecret | None = Field(None, description="ansible-vault encrypted password.")

    @model_validator(mode="after")
    def _exactly_one_secret(self) -> BasicAuth:
        if (self.password_env is None) == (self.password is None):
            raise InputError(
                "basic_auth needs exactly one of password_env and password",
                "set password_env: NAME_OF_ENV_VAR (or a vault-encrypted password)",
            )
        return self


class Origin(Strict):
    url: str = Field(description="http(s)://host[:port][/base/path] of the customer's origin.")
    host_header: str | None = Field(
        None, max_length=255, description="Host header sent to the origin (default: URL host)."
    )
    basic_auth: BasicAuth | None = None
    connect_timeout: duration(75, 1) = 5  # type: ignore[valid-type]
    read_timeout: duration(3600, 1) = 30  # type: ignore[valid-type]
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _vet_url(cls, url: str, info: ValidationInfo) -> str:
        policy = (info.context or {}).get("policy")
        allow = bool(policy and policy.allow_private_origins)
        parsed = parse_origin_url(url, allow_private=allow)
        if policy and parsed.host in policy.blocked_origin_hosts:
            raise InputError("origin host is blocked by the platform policy", "use another host")
        return url

    @field_validator("host_header")
    @classmethod
    def _vet_host_header(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9.-]+(:\d{1,5})?$", value):
            raise InputError("not a valid Host header", "write host or host:port")
        return value

    def parsed(self) -> OriginUrl:
        """Structure of the (already vetted) URL."""
        return split_origin_url(self.url)


class CacheRule(Strict):
    path: str = Field(description="Glob on the request path: '/api/*', '*.jpg', '/exact'.")
    ttl: duration(365 * DAY) | None = None  # type: ignore[valid-type]
    bypass: bool = False
    cache_set_cookie: bool = Field(
        False, description="Cache responses that carry Set-Cookie (never by default)."
    )

    @field_validator("path")
    @classmethod
    def _vet_glob(cls, path: str) -> str:
        if not _GLOB.match(path):
            raise InputError(
                "path glob must start with '/' or '*' and hold no spaces",
                "write e.g. '/api/*' or '*.jpg'",
            )
        return path

    @model_validator(mode="after")
    def _ttl_or_bypass(self) -> CacheRule:
        if self.ttl is None and not self.bypass and not self.cache_set_cookie:
            raise InputError("rule does nothing", "give it a ttl, bypass: true or cache_set_cookie")
        if self.bypass and self.ttl is not None:
            raise InputError("rule has both bypass and ttl", "keep one of them")
        return self


class Cache(Strict):
    default_ttl: duration(365 * DAY) = 3600  # type: ignore[valid-type]
    respect_origin: bool = True
    stale_if_error: duration(365 * DAY) = DAY  # type: ignore[valid-type]
    stale_while_revalidate: duration(30 * DAY) = 0  # type: ignore[valid-type]
    heuristic: bool = Field(
        False,
        description="Without explicit freshness, cache for 10 % of the time since "
        "Last-Modified (RFC 9111 §4.2.2, at most heuristic_max) instead of default_ttl.",
    )
    heuristic_max: duration(365 * DAY) = DAY  # type: ignore[valid-type]
    targeted_field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,63}$")] | None = Field(
        None,
        description="A CDN-specific Cache-Control field obeyed before CDN-Cache-Control "
        "(RFC 9213), e.g. Cdnctl-Cache-Control.",
    )
    targeted_field_to_client: bool = Field(
        False, description="Pass targeted_field and Surrogate-Control on to clients."
    )
    query_string: (
        Literal["all", "ignore"]
        | Annotated[
            list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-\[\]]{1,128}$")]],
            Field(min_length=1, max_length=64),
        ]
    ) = Field("all", description="'all', 'ignore', or the list of parameter names kept.")
    rules: list[CacheRule] = Field(default_factory=list, max_length=256)


class Tls(Strict):
    certificate: Literal["acme", "custom", "none"] = "acme"
    cert_file: str | None = Field(None, description="PEM chain (custom certificates).")
    key: VaultSecret | None = Field(None, description="vault-encrypted private key (custom).")
    redirect_http: bool = Field(
        False, description="Send plain HTTP to HTTPS (301/308); ACME challenges excepted."
    )

    @model_validator(mode="after")
    def _custom_needs_files(self) -> Tls:
        if self.certificate == "custom" and (self.cert_file is None or self.key is None):
            raise InputError(
                "a custom certificate needs cert_file and key",
                "add cert_file: path/to/chain.pem and key: !vault | ...",
            )
        if self.certificate != "custom" and (self.cert_file or self.key):
            raise InputError(
                f"cert_file/key are only used with certificate: custom (not {self.certificate})",
                "remove them or set certificate: custom",
            )
        if self.redirect_http and self.certificate == "none":
            raise InputError(
                "redirect_http sends clients to HTTPS, but certificate is none",
                "set certificate: acme (or custom), or remove redirect_http",
            )
        return self


class RateLimit(Strict):
    requests_per_second: int = Field(ge=1, le=1_000_000)
    burst: int | None = Field(None, ge=0, le=10_000_000, description="Default: = rate.")


class Tenant(Strict):
    id: Annotated[str, Field(pattern=TENANT_ID_PATTERN, description="Equals the file name.")]
    name: Annotated[str, Field(max_length=200)] | None = None
    contact: Annotated[str, Field(max_length=200)] | None = None
    domains: list[Domain] = Field(min_length=1, description="FQDNs served; '*.' wildcard allowed.")
    origin: Origin
    cache: Cache = Cache()
    shield: bool = True
    tls: Tls = Tls()
    rate_limit: RateLimit | None = None
    purge_tokens_env: list[Annotated[str, Field(pattern=ENV_NAME_PATTERN)]] = Field(
        default_factory=list, max_length=16
    )
    methods: list[Literal[METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["GET", "HEAD", "OPTIONS"],
        description="Allowed methods; others get 405. Only GET/HEAD are ever cached.",
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, tenant_id: str) -> str:
        if tenant_id in RESERVED_TENANT_IDS:
            raise InputError(
                f"id {tenant_id!r} is reserved by the platform",
                "choose another id (and rename the file to match)",
            )
        return tenant_id

    @field_validator("domains")
    @classmethod
    def _vet_domains(cls, domains: list[str], info: ValidationInfo) -> list[str]:
        policy = (info.context or {}).get("policy")
        if policy and len(domains) > policy.max_domains_per_tenant:
            raise InputError(
                f"{len(domains)} domains, over the policy's {policy.max_domains_per_tenant}",
                "split the tenant or raise max_domains_per_tenant",
            )
        return domains

    @field_validator("methods")
    @classmethod
    def _get_and_head(cls, methods: list[str]) -> list[str]:
        if "GET" not in methods or "HEAD" not in methods:
            raise InputError("methods must include GET and HEAD", "add GET and HEAD")
        if len(set(methods)) != len(methods):
            raise InputError("methods lists a method twice", "list each method once")
        return methods
