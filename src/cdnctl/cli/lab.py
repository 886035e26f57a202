"""The `cdnctl lab` command (what `make lab` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cdnctl.cli.common import print_problems
from cdnctl.cli.output import EXIT_INVALID, Format, err, out
from cdnctl.cli.roll import RestartOpt, UpgradeOpt, run_and_report

if TYPE_CHECKING:
    from cdnctl.lab.fleet import LabUp

lab_app = typer.Typer(
    help="The local CDN: `cdnctl lab` runs one edge; `cdnctl lab up|down` the multi-region lab."
)


@lab_app.callback(invoke_without_command=True)
def lab(
    ctx: typer.Context,
    tenants: Annotated[Path, typer.Option("--tenants", help="Tenant directory.")] = Path("tenants"),
    listen: Annotated[str, typer.Option("--listen", help="Public HOST:PORT.")] = "127.0.0.1:8080",
    admin_listen: Annotated[
        str, typer.Option("--admin-listen", help="Admin API HOST:PORT.")
    ] = "127.0.0.1:9145",
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Start, test every tenant through the edge, stop.")
    ] = False,
) -> None:
    """The local CDN: sample origins + a real edge serving tenants/ with live reload."""
    if ctx.invoked_subcommand is not None:
        return
    from cdnctl.edge.preview import PreviewError
    from cdnctl.lab.single_node import run_lab  # starts nginx: imported only when asked for
    from cdnctl.tenants.validate import ValidationFailed

    try:
        healthy = run_lab(
            tenants,
            listen,
            admin_listen,
            smoke_only=smoke,
            echo=lambda s: err.print(s, markup=False),
        )
    except ValidationFailed as exc:
        print_problems(exc.problems, Format.text)
        raise typer.Exit(EXIT_INVALID) from None
    except (PreviewError, OSError) as exc:
        err.print(f"[red]lab failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    if not healthy:
        err.print("[red]lab unhealthy:[/] a tenant did not answer 200 through the edge")
        raise typer.Exit(EXIT_INVALID)


@lab_app.command("up")
def up(
    stack: Annotated[
        Path | None,
        typer.Option("--stack", help="Pulumi stack file (default pulumi/Pulumi.local.yaml)."),
    ] = None,
    converge: Annotated[
        bool,
        typer.Option(
            "--converge", help="Run site.yml even when nothing it reads changed since the last."
        ),
    ] = False,
) -> None:
    """The multi-region lab on podman: containers, site.yml, certificates, smoke test."""
    from cdnctl.fleet.topology import FleetConfigError
    from cdnctl.lab.fleet import LabError, lab_up

    try:
        result = lab_up(stack, echo=lambda s: err.print(s, markup=False), force_converge=converge)
    except (LabError, FleetConfigError, ValueError, OSError) as exc:
        err.print(f"[red]lab up failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    _summary(result)


def _summary(result: LabUp) -> None:
    view = result.view
    hosts = Table(title=f"The lab: {len(view.hosts)} hosts (platform domain {view.domain})")
    for column in ("Region", "Host", "Role", "Address"):
        hosts.add_column(column)
    for region, host, role, address in view.hosts:
        hosts.add_row(region, host, role, address)
    out.print(hosts)
    out.print("[bold]Try it[/]: each region's DNS host, then HTTPS through the edge it gives")
    for region in view.regions:
        dns_address = next(iter(region.dns.values()), "?")
        edge = next(iter(region.edges.values()), "?")
        for tenant in result.tenants:
            out.print(
                f"  dig @{dns_address} {tenant.name} +subnet={region.client_network} +short",
                markup=False,
                soft_wrap=True,
            )
            out.print(
                f"  curl --resolve {tenant.name}:443:{edge} --cacert {result.root_ca} "
                f"-sI https://{tenant.name}/",
                markup=False,
                soft_wrap=True,
            )
    for region in view.regions:
        for host, address in region.prometheus.items():
            out.print(f"Prometheus {region.name}: http://{address}:9090 ({host})")
    out.print(f"Admin API token: {result.token_file} (unless CDNCTL_ADMIN_TOKEN was set)")
    out.print(f"ACME (pebble): https://{view.acme}:14000/dir, issuing root {result.root_ca}")
    for line in result.notes:
        out.print(line)
    checks = len(result.smoke.checks)
    out.print(f"Smoke test: {checks} checks passed in {result.smoke.seconds:.0f} s")
    total = sum(t.seconds for t in result.times)
    steps = ", ".join(f"{t.name} {t.seconds:.0f} s" for t in result.times)
    out.print(f"lab up in {total:.0f} s ({steps})")


@lab_app.command("down")
def down() -> None:
    """Remove the lab's containers and network (label cdnctl.lab) and its generated inventory."""
    from cdnctl.fleet.topology import FleetConfigError
    from cdnctl.lab.fleet import LabError, lab_down

    try:
        times = lab_down(echo=lambda s: err.print(s, markup=False))
    except (LabError, FleetConfigError, ValueError, OSError) as exc:
        err.print(f"[red]lab down failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    err.print(f"lab down in {sum(t.seconds for t in times):.0f} s", markup=False)


@lab_app.command("roll")
def roll(
    target: Annotated[str, typer.Argument(metavar="REGION|all", help="A region, or all.")],
    batch: Annotated[int, typer.Option("--batch", help="Edges of a region at once.")] = 1,
    restart: RestartOpt = False,
    upgrade_packages: UpgradeOpt = False,
) -> None:
    """`cdnctl roll` on the lab's inventory, with the lab's secrets."""
    from cdnctl.lab.fleet import inventory_dir, lab_environment

    run_and_report(inventory_dir(), target, batch, restart, upgrade_packages, lab_environment())


@lab_app.command("status")
def status() -> None:
    """The lab's containers (label cdnctl.lab): role, address, state."""
    from cdnctl.lab.fleet import LabError, lab_status

    try:
        rows = lab_status()
    except (LabError, OSError) as exc:
        err.print(f"[red]lab status failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    if not rows:
        out.print("No lab is running (`make lab` brings it up).")
        return
    table = Table(title="Lab containers")
    for column in ("Container", "Role", "Address", "State"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.role, row.address, row.state)
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
