"""The `cdnctl stats` command; `register(app)` mounts it on a Typer app."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cdnctl.cli.output import EXIT_INVALID, EXIT_USAGE, Format, FormatOpt, err, out
from cdnctl.fleet.stats import Snapshot, collect, prometheus_urls, sparkline


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B/s", "kB/s", "MB/s", "GB/s"):
        if abs(value) < 1000 or unit == "GB/s":
            return f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f} ms"


def render(snapshot: Snapshot, history_minutes: int) -> Group:
    regions = Table(title="Regions (5-minute rates)")
    for column in ("region", "req/s", "hit ratio", "bandwidth", "5xx", "origin p95", "tenants"):
        regions.add_column(column, justify="left" if column == "region" else "right")
    for r in snapshot.regions:
        regions.add_row(
            r.region, _rate(r.requests_per_second), _ratio(r.hit_ratio),
            _bytes(r.bytes_per_second), _ratio(r.error_ratio_5xx),
            _seconds(r.origin_p95_seconds),
            "-" if r.active_tenants is None else f"{r.active_tenants:.0f}",
        )  # fmt: skip
    tenants = Table(title="Tenants by traffic (5-minute rates)")
    for column in ("tenant", "region", "req/s", "hit ratio", "bandwidth", "5xx", "origin p95"):
        tenants.add_column(column, justify="left" if column in ("tenant", "region") else "right")
    tenants.add_column(f"req/s, last {history_minutes} min")
    for t in snapshot.tenants:
        tenants.add_row(
            t.tenant, t.region, _rate(t.requests_per_second), _ratio(t.hit_ratio),
            _bytes(t.bytes_per_second), _ratio(t.error_ratio_5xx),
            _seconds(t.origin_p95_seconds), sparkline(t.history),
        )  # fmt: skip
    parts: list[Table | Text] = [regions, tenants]
    if not snapshot.tenants:
        parts.append(Text("No tenant has had traffic in the last 5 minutes (or none matches)."))
    for url, error in snapshot.errors.items():
        parts.append(Text(f"error: {url}: {error}", style="red"))
    return Group(*parts)


def stats(
    prometheus: list[str] = typer.Option(
        [], "--prometheus", help="URL of a region's Prometheus (repeat for each region)."
    ),
    inventory: Path | None = typer.Option(
        None, "--inventory", help="Find the Prometheus servers in this inventory instead."
    ),
    tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant."),
    region: str | None = typer.Option(None, "--region", help="Only this region."),
    watch: bool = typer.Option(False, "--watch", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(5.0, "--interval", min=1, help="Seconds between refreshes."),
    history: int = typer.Option(15, "--history", min=2, help="Minutes the sparklines cover."),
    output: FormatOpt = Format.text,
) -> None:
    """Per tenant and per region: req/s, hit ratio, bandwidth, 5xx ratio, origin p95."""
    if bool(prometheus) == bool(inventory):
        err.print("[red]error:[/] give --prometheus URL (one per region) or --inventory DIR")
        raise typer.Exit(EXIT_USAGE)
    if inventory is not None:
        try:
            prometheus = prometheus_urls(inventory)
        except ValueError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(EXIT_USAGE) from None

    def snapshot() -> Snapshot:
        return collect(prometheus, tenant=tenant, region=region, history_minutes=history)

    if output == Format.json:
        result = snapshot()
        out.print_json(json.dumps(result.as_json()))
        raise typer.Exit(EXIT_INVALID if result.errors else 0)
    if not watch:
        result = snapshot()
        out.print(render(result, history))
        raise typer.Exit(EXIT_INVALID if result.errors else 0)
    with Live(render(snapshot(), history), console=out, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(), history))
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
