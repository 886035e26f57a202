"""The `cdnctl lab` command (what `make lab` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cdnctl.cli.common import EXIT_INVALID, Format, err, print_problems

lab_commands = typer.Typer()


@lab_commands.command()
def lab(
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
