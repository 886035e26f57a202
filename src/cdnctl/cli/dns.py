"""GeoDNS commands: drain/undrain, dns status, dns records, dns render (thin)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdnctl.bundle.compile import DEFAULT_CACHE_DIR, check_tenants
from cdnctl.cli.common import EXIT_INVALID, EXIT_USAGE, Format, FormatOpt, err, out
from cdnctl.fleet import dns, drain
from cdnctl.fleet.targets import inventory_json
from cdnctl.tenants.policy import PolicyError, load_policy
from cdnctl.tenants.validate import TENANT_SUFFIX, check_file

dns_app = typer.Typer(no_args_is_help=True, help="GeoDNS: zones, health states, records.")

InventoryOpt = Annotated[
    Path,
    typer.Option(
        "--inventory",
        envvar="CDNCTL_INVENTORY",
        help="Inventory directory: its edge and dns hosts, and group_vars/all/dns.yml.",
    ),
]
TargetArg = Annotated[str, typer.Argument(metavar="EDGE|REGION", help="Edge or region name.")]
TenantsOpt = Annotated[Path, typer.Option("--tenants", help="Tenant directory.")]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _set_drain(target: str, inventory: Path, *, drain_it: bool, force: bool) -> None:
    try:
        result = drain.set_drain(dns.DnsHosts(inventory), target, drain=drain_it, force=force)
    except drain.DrainRefused as exc:
        raise _fail(str(exc), EXIT_INVALID) from None
    except dns.DnsError as exc:
        raise _fail(str(exc)) from None
    for host in result.hosts:
        out.print(f"{host.host}: {_host_status(host)}", highlight=False)
    regions = ", ".join(sorted(result.after.regions)) or "none"
    edges = ", ".join(sorted(result.after.edges)) or "none"
    out.print(f"drained regions: {regions}; drained edges: {edges}", highlight=False)
    if not result.ok:
        raise _fail("admin_state was not written on every DNS host: run again", EXIT_INVALID)
    late = [host.host for host in result.hosts if host.in_force is False]
    if late:
        raise _fail(
            f"gdnsd on {', '.join(late)} did not apply admin_state within "
            f"{drain.WAIT_SECONDS:.0f} s: look at its journal (a line it refuses voids the "
            "whole file) and `cdnctl dns status`",
            EXIT_INVALID,
        )


def _host_status(host: drain.HostEdit) -> str:
    way = "drain agent" if host.via == "agent" else "Ansible"
    if not host.ok:
        return f"[red]failed[/] ({way}): {host.error}"
    written = "admin_state [green]ok[/]" + ("" if host.changed else " (unchanged)")
    if host.in_force is None:
        return (
            f"{written}, [yellow]gdnsd not answering[/]: it applies the file when it starts ({way})"
        )
    if not host.in_force:
        return (
            f"{written}, [yellow]not in force after {host.waited:.1f} s[/] (cdnctl dns status)"
            f" ({way})"
        )
    return f"{written}, in force after {host.waited:.2f} s ({way})"


def drain_command(
    target: TargetArg,
    inventory: InventoryOpt,
    force: Annotated[
        bool, typer.Option("--force", help="Even if a region or the fleet is left with no edge.")
    ] = False,
) -> None:
    """Take an edge or a whole region out of DNS on every DNS host; returns once every DNS
    host answers without it (at once with the geodns role's defaults; about 2 s later when
    gdnsd runs with its own timers)."""
    _set_drain(target, inventory, drain_it=True, force=force)


def undrain_command(target: TargetArg, inventory: InventoryOpt) -> None:
    """Put a drained edge or region back into DNS on every DNS host."""
    _set_drain(target, inventory, drain_it=False, force=False)


@dns_app.command("status")
def status(inventory: InventoryOpt, fmt: FormatOpt = Format.text) -> None:
    """Each DNS host's view: gdnsd's state (and monitored real state) of every edge/region."""
    try:
        results = dns.DnsHosts(inventory).states()
    except dns.DnsError as exc:
        raise _fail(str(exc)) from None
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
        raise _fail(str(exc)) from None
    path = tenants / f"{tenant}{TENANT_SUFFIX}"
    if not path.is_file():
        raise _fail(f"{path}: no such tenant file (tenant ids are file names in {tenants}/)")
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
            raise _fail(f"{len(checked.problems)} problem(s) in tenants: nothing written")
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
        raise _fail(str(exc)) from None
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
    app.command("drain")(drain_command)
    app.command("undrain")(undrain_command)
    app.add_typer(dns_app, name="dns")
