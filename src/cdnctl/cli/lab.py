"""The `cdnctl lab` command (what `make lab` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdnctl.cli.common import EXIT_INVALID, Format, err, print_problems

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
) -> None:
    """The multi-region lab on podman: inventory, containers (ansible/lab.yml), site.yml."""
    from cdnctl.fleet.topology import FleetConfigError
    from cdnctl.lab.fleet import LabError, lab_up

    try:
        times = lab_up(stack, echo=lambda s: err.print(s, markup=False))
    except (LabError, FleetConfigError, ValueError, OSError) as exc:
        err.print(f"[red]lab up failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    total = sum(t.seconds for t in times)
    steps = ", ".join(f"{t.name} {t.seconds:.0f} s" for t in times)
    err.print(f"lab up in {total:.0f} s ({steps})", markup=False)


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
