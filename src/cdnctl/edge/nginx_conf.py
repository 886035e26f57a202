"""Render the host-level nginx.conf of an edge or shield node from typed settings.

One template (`templates/nginx/nginx.conf.j2`) serves `cdnctl preview`, the tests and the
Ansible role. Besides nginx.conf, a node instance has two private files next to it:
`cdnctl.json` (settings the Lua code reads at start) and `admin.token` (0600, read once by
the nginx master): the admin token is never written into nginx.conf or a log.
"""

from __future__ import annotations

import json
import os
import pwd
import re
from pathlib import Path
from typing import Literal

import jinja2
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from cdnctl.edge.pki import self_signed_pem
from cdnctl.paths import write_private

REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout: src/cdnctl/edge/ is 3 below
TEMPLATES_DIR = REPO_ROOT / "templates" / "nginx"
LUA_DIR = REPO_ROOT / "roles" / "edge" / "files" / "lua"
MODULES_DIR = Path("/usr/lib/nginx/modules")
DEFAULT_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")

COMPRESS_TYPES = [
    "text/plain",
    "text/css",
    "text/xml",
    "text/javascript",
    "application/javascript",
    "application/json",
    "application/xml",
    "image/svg+xml",
]


def _check_hostport(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


class NodeSettings(BaseModel):
    """Everything host-level about one edge or shield node (tenants are not here)."""

    mode: Literal["edge", "shield"] = "edge"
    prefix: Path = Field(description="private nginx prefix (conf/, logs/, run/, ...)")
    listen: str = "127.0.0.1:8080"
    https_listen: str | None = Field(None, description="HOST:PORT of the TLS listener")
    # The certificate for names no tenant certificate covers (and clients without SNI).
    # None: a self-signed one made once in PREFIX/conf (default.crt, default.key 0600).
    default_cert: Path | None = None
    default_key: Path | None = None
    certs_dict_size: str = "64m"  # about 5 KB per tenant certificate
    tls_session_cache: str = "16m"  # about 4000 sessions per megabyte
    admin_listen: str = "127.0.0.1:8081"
    admin_token: SecretStr
    cache_path: Path | None = None  # default: PREFIX/cache
    cache_levels: str = "1:2"
    cache_max_size: str = "1g"
    cache_keys_zone: str = "32m"
    cache_inactive: str = "7d"
    shields: list[str] = Field(default_factory=list, description="HOST:PORT, edges only")
    shield_connect_timeout: float = 1.0
    resolvers: list[str] = Field(default_factory=list, description="IP[:PORT] DNS servers")
    resolve: dict[str, str] = Field(default_factory=dict, description="static HOST -> IP map")
    workers: int | Literal["auto"] = 1
    worker_connections: int = 4096
    user: str | None = None  # nginx `user` (only meaningful when started as root)
    state_dir: Path | None = None  # default: PREFIX/state
    lua_dir: Path = LUA_DIR
    modules_dir: Path = MODULES_DIR
    lua_dynamic_modules: bool = True  # Debian: load ndk + ngx_lua; OpenResty: built in
    trusted_ca: Path = DEFAULT_CA_FILE
    slice_size: str = "1m"
    upstream_keepalive: int = 64
    sendfile: bool = True  # large objects; costs a few us per tiny (1 KiB) response
    config_dict_size: str = "64m"
    metrics_dict_size: str = "16m"
    purge_dict_size: str = "32m"
    ratelimit_dict_size: str = "16m"
    revalidate_dict_size: str = "32m"  # about 250 bytes per stored response
    admin_max_body: str = "512m"
    error_log_level: str = "warn"
    # Public access log: None writes each line as the request ends (one write(2) per
    # request); "64k" buffers lines, flushed when full and at least every second.
    access_log_buffer: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[kKmM]?$")
    compress_types: list[str] = Field(default_factory=lambda: list(COMPRESS_TYPES))

    @field_validator("listen", "admin_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _check_hostport(value)

    @field_validator("https_listen")
    @classmethod
    def _https_listen(cls, value: str | None) -> str | None:
        return None if value is None else _check_hostport(value)

    @model_validator(mode="after")
    def _default_certificate(self) -> NodeSettings:
        if (self.default_cert is None) != (self.default_key is None):
            raise ValueError("default_cert and default_key: give both or neither")
        return self

    @field_validator("cache_inactive")
    @classmethod
    def _cache_inactive(cls, value: str) -> str:
        if not _NGINX_TIME.fullmatch(value):
            raise ValueError(f"{value!r} is not an nginx time (e.g. 7d, 12h, 1h30m)")
        return value

    @field_validator("shields")
    @classmethod
    def _shields(cls, value: list[str]) -> list[str]:
        return [_check_hostport(v) for v in value]

    @property
    def effective_cache_path(self) -> Path:
        return (self.cache_path or self.prefix / "cache").absolute()

    @property
    def effective_state_dir(self) -> Path:
        return (self.state_dir or self.prefix / "state").absolute()

    @property
    def default_cert_path(self) -> Path:
        return (self.default_cert or self.conf_dir / "default.crt").absolute()

    @property
    def default_key_path(self) -> Path:
        return (self.default_key or self.conf_dir / "default.key").absolute()

    @property
    def https_port(self) -> int | None:
        return int(self.https_listen.rpartition(":")[2]) if self.https_listen else None

    @property
    def conf_dir(self) -> Path:
        return self.prefix.absolute() / "conf"

    @property
    def settings_file(self) -> Path:
        return self.conf_dir / "cdnctl.json"

    @property
    def token_file(self) -> Path:
        return self.conf_dir / "admin.token"


def _size_bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    last = size[-1].lower()
    return int(size[:-1]) * units[last] if last in units else int(size)


_NGINX_TIME = re.compile(r"(?:[0-9]+(?:ms|[smhdwMy])?)+")


def brotli_available(settings: NodeSettings) -> bool:
    return (settings.modules_dir / "ngx_http_brotli_filter_module.so").exists()


def render(settings: NodeSettings) -> str:
    """The nginx.conf text for these settings (no secrets in it)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("nginx.conf.j2").render(
        s=settings,
        prefix=str(settings.prefix.absolute()),
        cache_path=str(settings.effective_cache_path),
        settings_file=str(settings.settings_file),
        brotli=brotli_available(settings),
    )


def lua_settings(settings: NodeSettings) -> dict[str, object]:
    """The document the Lua side reads at start (`cdnctl.json`)."""
    return {
        "mode": settings.mode,
        "cache_path": str(settings.effective_cache_path),
        "cache_levels": [int(x) for x in settings.cache_levels.split(":")],
        # How long an unused cache entry lives: the purge index keeps no-cache entries
        # (stored to be revalidated, so without a TTL of their own) for that long.
        "cache_inactive": settings.cache_inactive,
        "slice_size": _size_bytes(settings.slice_size),
        "shields": settings.shields,
        "shield_connect_timeout": settings.shield_connect_timeout,
        "resolvers": settings.resolvers,
        "resolve": dict(sorted(settings.resolve.items())),
        "state_dir": str(settings.effective_state_dir),
        "token_file": str(settings.token_file),
        "https_port": settings.https_port,
    }


def _ensure_self_signed(cert: Path, key: Path) -> None:
    """A self-signed default certificate, made once: what a client asking for a name no
    tenant certificate covers gets (it fails verification, as it should)."""
    if cert.exists() and key.exists():
        return
    pem_cert, pem_key = self_signed_pem(["default.cdnctl.invalid"], days=3650)
    write_private(key, pem_key.decode())
    cert.write_bytes(pem_cert)


def write_instance(settings: NodeSettings) -> Path:
    """Create the prefix layout and write nginx.conf, cdnctl.json and admin.token.

    Returns the path of nginx.conf. The state and cache directories are handed to the
    worker user when nginx runs as root, since workers persist bundles there.
    """
    prefix = settings.prefix.absolute()
    for sub in ("conf", "logs", "run", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    state_dir = settings.effective_state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    settings.effective_cache_path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # nginx started as root runs its workers as `user` (nobody by default).
        entry = pwd.getpwnam((settings.user or "nobody").split()[0])
        os.chmod(prefix, 0o755)
        for path in (state_dir, settings.effective_cache_path):
            os.chown(path, entry.pw_uid, entry.pw_gid)
            for child in path.iterdir():
                os.chown(child, entry.pw_uid, entry.pw_gid)
    if settings.https_listen and settings.default_cert is None:
        _ensure_self_signed(settings.default_cert_path, settings.default_key_path)
    write_private(settings.token_file, settings.admin_token.get_secret_value() + "\n")
    write_private(
        settings.settings_file, json.dumps(lua_settings(settings), indent=2, sort_keys=True)
    )
    conf = settings.conf_dir / "nginx.conf"
    conf.write_text(render(settings))
    return conf
