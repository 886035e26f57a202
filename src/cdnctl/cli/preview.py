"""The `cdnctl preview` command; `register(app)` mounts it on a Typer app."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cdnctl.edge.preview import Preview, PreviewError, PreviewOptions, parse_resolve


def preview(
    tenants: Path = typer.Option(
        Path("tenants"), "--tenants", help="Directory of tenant YAML files.", file_okay=False
    ),
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="Public HOST:PORT."),
    admin_listen: str = typer.Option(
        "127.0.0.1:8081", "--admin-listen", help="Admin API HOST:PORT."
    ),
    allow_private_origins: bool = typer.Option(
        False, "--allow-private-origins", help="Accept origins on private/loopback addresses."
    ),
    resolve: list[str] = typer.Option(
        [], "--resolve", help="HOST:IP, like curl: where the edge finds an origin host."
    ),
    shield: list[str] = typer.Option([], "--shield", help="HOST:PORT of a shield node."),
    workers: int = typer.Option(1, "--workers", min=1, help="nginx worker processes."),
) -> None:
    """Serve TENANTS through a real local edge; changes are hot-applied (no reload)."""
    try:
        resolve_map = parse_resolve(resolve)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    options = PreviewOptions(
        tenants=tenants,
        listen=listen,
        admin_listen=admin_listen,
        allow_private_origins=allow_private_origins,
        resolve=resolve_map,
        shields=list(shield),
        workers=workers,
    )
    try:
        Preview(options, os.environ, echo=lambda line: typer.echo(line, err=True)).run()
    except PreviewError as exc:
        typer.echo(f"preview: {exc}", err=True)
        raise typer.Exit(1) from exc


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)
