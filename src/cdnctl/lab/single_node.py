"""`cdnctl lab` (what `make lab` runs): the sample tenants served by a real local edge.

For every tenant whose origin is a lab name (`*.test`), a sample origin is started on
127.0.0.1 at the URL's port (with basic auth when the tenant uses it: the password is the
one in its `password_env`, generated when unset), the edge resolves the origin names to
127.0.0.1, and `cdnctl preview` serves the tenants directory with live reload. Every
tenant is smoke-tested through the edge before the lab reports ready.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cdnctl.bundle.compile import compile_tenants
from cdnctl.edge.admin_client import TOKEN_ENV
from cdnctl.edge.preview import Preview, PreviewOptions
from cdnctl.lab.sample_origin import SampleOrigin

LAB_DOMAIN_SUFFIX = ".test"
LAB_ADDRESS = "127.0.0.1"
Printer = Callable[[str], None]


@dataclass(frozen=True)
class LabOrigin:
    tenant: str
    host: str
    port: int
    basic_auth: tuple[str, str] | None


def lab_origins(bundle: dict[str, Any], environ: MutableMapping[str, str]) -> list[LabOrigin]:
    """The sample origins the lab tenants need; fills unset lab secrets into `environ`."""
    origins = []
    for tenant_id, tenant in sorted(bundle["tenants"].items()):
        origin = tenant["origin"]
        if not origin["host"].endswith(LAB_DOMAIN_SUFFIX):
            continue
        auth = origin["basic_auth"]
        credentials = None
        if auth and "password_env" in auth:
            password = environ.setdefault(auth["password_env"], secrets.token_urlsafe(12))
            credentials = (auth["username"], password)
        for name in tenant["purge_tokens_env"]:
            environ.setdefault(name, secrets.token_urlsafe(16))
        origins.append(LabOrigin(tenant_id, origin["host"], origin["port"], credentials))
    return origins


@contextmanager
def running_origins(origins: list[LabOrigin]) -> Iterator[list[SampleOrigin]]:
    with ExitStack() as stack:
        started = [
            stack.enter_context(
                SampleOrigin(
                    tenant=o.tenant, host=LAB_ADDRESS, port=o.port, basic_auth=o.basic_auth
                )
            )
            for o in origins
        ]
        yield started


def smoke_test(listen: str, bundle: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """(tenant, host, status, cache status) of one request per tenant through the edge."""
    rows = []
    with httpx.Client(base_url=f"http://{listen}", timeout=10) as client:
        for tenant_id, tenant in sorted(bundle["tenants"].items()):
            host = next(
                (d for d in tenant["domains"] if not d.startswith("*.")),
                "www." + tenant["domains"][0][2:],
            )
            response = client.get("/index.html", headers={"Host": host})
            rows.append(
                (tenant_id, host, response.status_code, response.headers.get("X-Cache-Status", ""))
            )
    return rows


def run_lab(
    tenants: Path,
    listen: str,
    admin_listen: str,
    *,
    smoke_only: bool,
    echo: Printer = print,
) -> bool:
    """Bring the lab up; serve until interrupted (or only smoke-test). True if healthy."""
    environ = dict(os.environ)
    environ.setdefault(TOKEN_ENV, secrets.token_urlsafe(24))
    bundle = compile_tenants(tenants, allow_private_origins=True)
    origins = lab_origins(bundle, environ)
    options = PreviewOptions(
        tenants=tenants,
        listen=listen,
        admin_listen=admin_listen,
        allow_private_origins=True,
        resolve={o.host: LAB_ADDRESS for o in origins},
    )
    with running_origins(origins):
        for origin in origins:
            auth = " (basic auth)" if origin.basic_auth else ""
            echo(f"origin {origin.host} for {origin.tenant} on {LAB_ADDRESS}:{origin.port}{auth}")
        preview = Preview(options, environ, echo=echo)
        try:
            preview.start()
            rows = smoke_test(listen, bundle)
            healthy = all(status == 200 for _, _, status, _ in rows)
            for tenant_id, host, status, cache in rows:
                echo(f"  {tenant_id:<20} {host:<32} HTTP {status} {cache}")
            echo(_instructions(listen, admin_listen, bundle, environ))
            if smoke_only or not healthy:
                return healthy
            echo("lab is up; edit tenants/*.yaml to see changes applied live. Ctrl-C to stop.")
            preview.serve_until_signal()
            return True
        finally:
            preview.stop()


def _instructions(
    listen: str, admin_listen: str, bundle: dict[str, Any], environ: dict[str, str]
) -> str:
    first = next(iter(sorted(bundle["hosts"])), "cdn.customer-a.test")
    return "\n".join(
        [
            "",
            "Try it:",
            f"  curl -i -H 'Host: {first}' http://{listen}/index.html    # twice: MISS then HIT",
            f"  curl -i -H 'Host: unknown.test' http://{listen}/             # 404 JSON",
            f"  export {TOKEN_ENV}={environ[TOKEN_ENV]}",
            f"  .venv/bin/cdnctl purge {bundle['hosts'].get(first, 'customer-a')} --all "
            f"--edge http://{admin_listen}",
            f'  curl -s -H "Authorization: Bearer $CDNCTL_ADMIN_TOKEN" '
            f"http://{admin_listen}/metrics | head",
            "",
        ]
    )
