"""`cdnctl new`: a valid tenant file from templates/tenant.yaml.j2."""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cdnctl.paths import templates_dir
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.problems import Problem
from cdnctl.tenants.validate import TENANT_SUFFIX, check_file


def render_tenant(tenant_id: str, domains: list[str], origin: str, name: str | None) -> str:
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, values are emitted with tojson
    )
    return env.get_template("tenant.yaml.j2").render(
        id=tenant_id,
        name=name or tenant_id,
        domains=domains,
        origin=origin,
        env_prefix=re.sub(r"[^A-Z0-9]", "_", tenant_id.upper()),
    )


def new_tenant(
    directory: Path,
    tenant_id: str,
    domains: list[str],
    origin: str,
    name: str | None,
    policy: Policy,
) -> tuple[Path, list[Problem]]:
    """Write `<directory>/<id>.yaml` only when the rendered file validates."""
    path = directory / f"{tenant_id}{TENANT_SUFFIX}"
    if path.exists():
        return path, [
            Problem(str(path), "", "tenant file already exists", "edit it, or pick another id")
        ]
    text = render_tenant(tenant_id, domains, origin, name)
    result = check_file(str(path), text.encode("utf-8"), policy)
    if result.problems:
        return path, result.problems
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, []
