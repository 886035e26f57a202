"""The `cdnctl dashboards` command; `register(app)` mounts it on a Typer app."""

from __future__ import annotations

from pathlib import Path

import typer

from cdnctl.cli.output import EXIT_INVALID, err, out
from cdnctl.fleet import dashboards as boards


def dashboards(
    region: list[str] = typer.Option(
        ..., "--region", help="A region with a Prometheus datasource (repeat for each)."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Directory to write the dashboards to."),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if a file in --out differs."
    ),
) -> None:
    """Write the Grafana dashboards ("CDN overview", "Tenant detail") as JSON files."""
    stale = []
    for name, board in boards.dashboards(region).items():
        path = out_dir / name
        text = boards.render(board)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            out.print(f"wrote {path}")
    if stale:
        err.print(f"[red]out of date:[/] {', '.join(map(str, stale))}: run without --check")
        raise typer.Exit(EXIT_INVALID)


def register(app: typer.Typer) -> None:
    app.command("dashboards")(dashboards)
