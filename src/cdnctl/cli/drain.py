"""drain / undrain (thin): an edge or a region out of GeoDNS and back, on every DNS host.

Imports only what a drain needs (no compiler, tenant model or renderers): an SRE's drain
starts acting about 0.2 s after the command is typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdnctl.cli.output import EXIT_INVALID, fail, out
from cdnctl.fleet import dns_hosts, drain

InventoryOpt = Annotated[
    Path,
    typer.Option(
        "--inventory",
        envvar="CDNCTL_INVENTORY",
        help="Inventory directory: its edge and dns hosts, and group_vars/all/dns.yml.",
    ),
]
TargetArg = Annotated[str, typer.Argument(metavar="EDGE|REGION", help="Edge or region name.")]


def _set_drain(target: str, inventory: Path, *, drain_it: bool, force: bool) -> None:
    try:
        result = drain.set_drain(dns_hosts.DnsHosts(inventory), target, drain=drain_it, force=force)
    except drain.DrainRefused as exc:
        raise fail(str(exc), EXIT_INVALID) from None
    except dns_hosts.DnsError as exc:
        raise fail(str(exc)) from None
    for host in result.hosts:
        out.print(f"{host.host}: {_host_status(host)}", highlight=False)
    regions = ", ".join(sorted(result.after.regions)) or "none"
    edges = ", ".join(sorted(result.after.edges)) or "none"
    out.print(f"drained regions: {regions}; drained edges: {edges}", highlight=False)
    if not result.ok:
        raise fail("admin_state was not written on every DNS host: run again", EXIT_INVALID)
    late = [host.host for host in result.hosts if host.in_force is False]
    if late:
        raise fail(
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


def register(app: typer.Typer) -> None:
    app.command("drain")(drain_command)
    app.command("undrain")(undrain_command)
