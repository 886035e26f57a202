"""`cdnctl certs issue|renew|status`: tenant certificates and the platform wildcard (see
cdnctl.fleet.certificates)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdnctl.cli.common import DEFAULT_CACHE_DIR, policy_or_exit, print_problems, run_compile
from cdnctl.cli.edge import (
    EdgeOpt,
    TokenFileOpt,
    VaultPasswordOpt,
    read_token_or_exit,
    vault_secret,
)
from cdnctl.cli.output import EXIT_FAILED, Format, FormatOpt, fail, out
from cdnctl.edge.admin_client import edges_from_urls
from cdnctl.fleet import certificates
from cdnctl.fleet.dns import DnsError
from cdnctl.fleet.targets import edges_from_inventory

certs_app = typer.Typer(no_args_is_help=True, help="Tenant certificates: ACME and custom.")


InventoryArg = Annotated[
    Path,
    typer.Option(
        "--inventory",
        help="Inventory directory: its edges get the certificates, its "
        "group_vars/all/certificates.yml (cdn_acme) sets the ACME server, contact and state.",
    ),
]
TenantsOpt = Annotated[Path, typer.Option("--tenants", help="Tenant directory.")]


def _wanted(tenants: Path, inventory: Path) -> list[certificates.Wanted]:
    result = run_compile([tenants], policy_or_exit(inventory), DEFAULT_CACHE_DIR)
    if not result.ok or result.bundle is None:
        print_problems(result.problems, Format.text)
        raise typer.Exit(EXIT_FAILED)
    # cert_file paths are relative to the repository: the directory holding tenants/.
    return certificates.wanted_certificates(
        json.loads(result.bundle)["tenants"], tenants.absolute().parent
    )


def _platform(
    inventory: Path, settings: certificates.AcmeSettings
) -> tuple[list[certificates.Wanted], Callable[[dict[str, str]], None] | None]:
    """The platform wildcard (with `cdn_acme.platform_wildcard`) and its DNS-01 publisher."""
    if not settings.platform_wildcard:
        return [], None
    try:
        wanted, publish = certificates.platform_from_inventory(inventory)
    except DnsError as exc:
        raise fail(f"cdn_acme.platform_wildcard needs the GeoDNS settings: {exc}") from None
    return [wanted], publish


def _settings(inventory: Path) -> certificates.AcmeSettings:
    try:
        return certificates.load_settings(inventory)
    except certificates.CertificateError as exc:
        raise fail(str(exc)) from None


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _converge(
    renew: bool,
    inventory: Path,
    tenants: Path,
    edge: list[str] | None,
    token_file: Path | None,
    vault_password_file: Path | None,
    fmt: Format,
) -> None:
    settings = _settings(inventory)
    platform, publish_dns = _platform(inventory, settings)
    wanted = _wanted(tenants, inventory) + platform
    try:
        targets = edges_from_urls(edge) if edge else edges_from_inventory(inventory, ("edge",))
    except ValueError as exc:
        raise fail(str(exc)) from None
    report = certificates.converge(
        wanted,
        settings,
        targets,
        read_token_or_exit(token_file),
        renew=renew,
        vault_secret=vault_secret(vault_password_file),
        publish_dns=publish_dns,
    )
    if fmt is Format.json:
        out.print_json(
            json.dumps(
                {
                    "ok": report.ok,
                    "issued": report.issued,
                    "tenants": [
                        {
                            "tenant": t.tenant,
                            "kind": t.kind,
                            "action": t.decision.action,
                            "reason": t.decision.reason,
                            "not_after": t.not_after,
                            "error": t.error,
                        }
                        for t in report.tenants
                    ],
                    "edges": [
                        {
                            "edge": e.edge,
                            "ok": e.ok,
                            "set": e.set,
                            "removed": e.removed,
                            "error": e.error,
                        }
                        for e in report.edges
                    ],
                }
            )
        )
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)
        return
    table = Table(title=f"Certificates ({settings.directory_url})")
    for column in ("Tenant", "Kind", "Action", "Why", "Expires (UTC)", "Result"):
        table.add_column(column)
    for t in report.tenants:
        result = f"[red]{t.error}[/]" if t.error else ("issued" if t.issued else "ok")
        table.add_row(
            t.tenant, t.kind, t.decision.action, t.decision.reason, _when(t.not_after), result
        )
    out.print(table)
    edges = Table(title="Edges")
    for column in ("Edge", "Sent", "Removed", "Result"):
        edges.add_column(column)
    for e in report.edges:
        edges.add_row(
            e.edge,
            ", ".join(e.set) or "-",
            ", ".join(e.removed) or "-",
            "ok" if e.ok else f"[red]{e.error}[/]",
        )
    out.print(edges)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@certs_app.command("issue")
def issue(
    inventory: InventoryArg,
    tenants: TenantsOpt = Path("tenants"),
    edge: EdgeOpt = None,
    token_file: TokenFileOpt = None,
    vault_password_file: VaultPasswordOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Obtain the certificates tenants lack (or whose names changed) and deploy all of them."""
    _converge(False, inventory, tenants, edge, token_file, vault_password_file, fmt)


@certs_app.command("renew")
def renew(
    inventory: InventoryArg,
    tenants: TenantsOpt = Path("tenants"),
    edge: EdgeOpt = None,
    token_file: TokenFileOpt = None,
    vault_password_file: VaultPasswordOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """`issue`, plus renewing every certificate with less than its renewal fraction left."""
    _converge(True, inventory, tenants, edge, token_file, vault_password_file, fmt)


@certs_app.command("status")
def status(
    inventory: InventoryArg, tenants: TenantsOpt = Path("tenants"), fmt: FormatOpt = Format.text
) -> None:
    """What the controller holds per tenant and what the next `renew` would do (offline)."""
    settings = _settings(inventory)
    platform, _ = _platform(inventory, settings)
    rows = certificates.status(_wanted(tenants, inventory) + platform, settings)
    if fmt is Format.json:
        out.print_json(
            json.dumps(
                [
                    {
                        "tenant": r.tenant,
                        "kind": r.kind,
                        "names": list(r.names),
                        "not_after": r.not_after,
                        "action": r.decision.action,
                        "reason": r.decision.reason,
                        "failures": r.failures.count,
                        "last_error": r.failures.last_error,
                    }
                    for r in rows
                ]
            )
        )
        return
    table = Table(title="Certificates")
    for column in ("Tenant", "Kind", "Names", "Expires (UTC)", "Next", "Why", "Last error"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.tenant,
            r.kind,
            ", ".join(r.names),
            _when(r.not_after),
            r.decision.action,
            r.decision.reason,
            r.failures.last_error or "-",
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
