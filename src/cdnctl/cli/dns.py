"""GeoDNS commands: dns status, dns records, dns render (thin; drain/undrain: drain.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdnctl.bundle.compile import DEFAULT_CACHE_DIR, check_tenants
from cdnctl.cli.drain import InventoryOpt
from cdnctl.cli.output import EXIT_INVALID, Format, FormatOpt, err, fail, out
from cdnctl.fleet import dns, dns_hosts
from cdnctl.fleet.targets import inventory_json
from cdnctl.tenants.policy import PolicyError, load_policy
from cdnctl.tenants.validate import TENANT_SUFFIX, check_file

dns_app = typer.Typer(no_args_is_help=True, help="GeoDNS: zones, health states, records.")

TenantsOpt = Annotated[Path, typer.Option("--tenants", help="Tenant directory.")]


@dns_app.command("status")
def status(inventory: InventoryOpt, fmt: FormatOpt = Format.text) -> None:
    """Each DNS host's view: gdnsd's state (and monitored real state) of every edge/region."""
    try:
        results = dns_hosts.DnsHosts(inventory).states()
    except dns.DnsError as exc:
        raise fail(str(exc)) from None
    views = {r.host: json.loads(r.stdout) for r in results if r.ok}
    if fmt is Format.json:
        out.print_json(data=views)
    else:
        table = Table(title="gdnsd states (state / monitored)")
        table.add_column("Resource", style="bold")
        for host in views:
            table.add_column(host)
        for key in sorted({key for view in views.values() for key in view}):
            cells = [
                f"{view[key]['state']} / {view[key]['real_state']}" if key in view else "-"
                for view in views.values()
            ]
            table.add_row(key, *cells)
        out.print(table)
    failed = [r for r in results if not r.ok]
    for result in failed:
        err.print(f"[red]{result.host}[/]: {result.error}", highlight=False)
    if failed:
        raise typer.Exit(EXIT_INVALID)


@dns_app.command("records")
def records(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Tenant id.")],
    inventory: InventoryOpt,
    tenants: TenantsOpt = Path("tenants"),
) -> None:
    """The DNS records the customer creates in its own zones (one CNAME per domain)."""
    try:
        settings = dns.load_settings(inventory, dns.platform_vars(inventory_json(inventory)))
        policy = load_policy(inventory)
    except (ValueError, PolicyError) as exc:
        raise fail(str(exc)) from None
    path = tenants / f"{tenant}{TENANT_SUFFIX}"
    if not path.is_file():
        raise fail(f"{path}: no such tenant file (tenant ids are file names in {tenants}/)")
    result = check_file(str(path), path.read_bytes(), policy)
    if result.problems:
        for problem in result.problems:
            err.print(problem.render(), markup=False, highlight=False)
        raise typer.Exit(EXIT_INVALID)
    names = dns.TenantNames(tenant, result.domains)
    table = Table(title=f"DNS records for {tenant} (create them at the customer's DNS provider)")
    for header in ("Name", "Type", "Value"):
        table.add_column(header)
    for row in dns.customer_records(settings, names):
        table.add_row(*row)
    out.print(table)
    out.print(
        "A zone apex cannot hold a CNAME: there, use the provider's ALIAS/ANAME record to "
        f"{tenant}.{settings.domain} instead.",
        highlight=False,
    )


@dns_app.command("render")
def render(
    inventory: InventoryOpt,
    out_dir: Annotated[Path, typer.Option("--out", help="Writes OUT/config and OUT/zones/.")],
    tenants: TenantsOpt = Path("tenants"),
    listen: Annotated[
        list[str] | None, typer.Option("--listen", help="gdnsd listen address (repeatable).")
    ] = None,
    run_dir: Annotated[str, typer.Option("--run-dir")] = dns.ServerOptions.run_dir,
    state_dir: Annotated[str, typer.Option("--state-dir")] = dns.ServerOptions.state_dir,
    servers: Annotated[
        Path | None,
        typer.Option(
            "--servers",
            help="JSON {DNS host: {listen, run_dir, state_dir}}: writes OUT/configs/<host> "
            "for each instead of OUT/config (the geodns role's way).",
        ),
    ] = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write gdnsd's config(s) and zones (what the geodns role installs on the DNS hosts)."""
    try:
        listing = inventory_json(inventory)
        settings = dns.load_settings(inventory, dns.platform_vars(listing))
        policy = load_policy(inventory)
        fleet = dns.fleet_from_inventory(listing)
        checked = check_tenants([tenants], policy, cache_dir=DEFAULT_CACHE_DIR)
        if not checked.ok:
            for problem in checked.problems:
                err.print(problem.render(), markup=False, highlight=False)
            raise fail(f"{len(checked.problems)} problem(s) in tenants: nothing written")
        names = dns.tenant_names(checked.results)
        config, configs = None, {}
        if servers is not None:
            configs = {
                host: dns.render_config(settings, fleet, server)
                for host, server in dns.load_servers(servers, fleet).items()
            }
        else:
            server = dns.ServerOptions(
                listen=tuple(dns.check_listen(a) for a in listen or dns.ServerOptions.listen),
                run_dir=run_dir,
                state_dir=state_dir,
            )
            config = dns.render_config(settings, fleet, server)
        zones = dns.render_zones(settings, fleet, names)
    except (ValueError, PolicyError) as exc:
        raise fail(str(exc)) from None
    dns.write_tree(out_dir, config, zones, configs)
    summary = {
        "zones": len(zones),
        "tenants": len(names),
        "zones_digest": dns.zones_digest(zones),
        "configs": sorted(configs) or ["config"],
    }
    if fmt is Format.json:
        out.print_json(data=summary)
    else:
        written = ", ".join(f"configs/{host}" for host in configs) or "config"
        out.print(f"{out_dir}: {written} and {len(zones)} zone(s), {len(names)} tenant(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(dns_app, name="dns")
