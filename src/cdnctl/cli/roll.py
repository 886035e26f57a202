"""Rolling edge upgrades: `cdnctl roll` (runs ansible/rolling.yml per region) and the checks
the playbook calls, `cdnctl rolling preflight|verify|wait-dns` (thin)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdnctl.cli.edge import read_token_or_exit
from cdnctl.cli.output import EXIT_INVALID, EXIT_USAGE, Format, FormatOpt, err, out
from cdnctl.fleet import rolling
from cdnctl.fleet.dns import DnsError

rolling_app = typer.Typer(
    no_args_is_help=True, help="The checks ansible/rolling.yml runs around each edge."
)

InventoryOpt = Annotated[
    Path,
    typer.Option("--inventory", envvar="CDNCTL_INVENTORY", help="Inventory directory."),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help="Admin token file (default: $CDNCTL_ADMIN_TOKEN)."),
]
BatchOpt = Annotated[int, typer.Option("--batch", help="Edges of a region rolled at once.")]
TargetArg = Annotated[str, typer.Argument(metavar="REGION|all", help="A region, or all.")]
EdgeArg = Annotated[str, typer.Argument(metavar="EDGE", help="Inventory name of the edge.")]


def _preflight(inventory: Path, target: str, batch: int, token: str) -> rolling.Preflight:
    try:
        return rolling.preflight(inventory, target, batch, token)
    except (rolling.RollError, DnsError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _print_preflight(result: rolling.Preflight) -> None:
    table = Table(title=f"roll plan (bundle {result.version or 'none'})")
    table.add_column("Region", style="bold")
    table.add_column("Batches, in order")
    for region, batches in result.batches.items():
        table.add_row(region, "  ->  ".join(", ".join(batch) for batch in batches))
    out.print(table)
    for problem in result.problems:
        err.print(f"[red]refused:[/] {problem}", highlight=False)


@rolling_app.command("preflight")
def preflight(
    target: TargetArg,
    inventory: InventoryOpt,
    batch: BatchOpt = 1,
    token_file: TokenFileOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Refuse a roll on a degraded fleet: every edge healthy, one bundle version, nothing
    drained or DOWN in GeoDNS, and a batch that leaves each region an edge."""
    result = _preflight(inventory, target, batch, read_token_or_exit(token_file))
    if fmt is Format.json:
        out.print_json(data=result.as_json())
    else:
        _print_preflight(result)
    if not result.ok:
        raise typer.Exit(EXIT_INVALID)


@rolling_app.command("verify")
def verify(
    edge: EdgeArg,
    inventory: InventoryOpt,
    version: Annotated[
        str, typer.Option("--version", help="The fleet's bundle version (empty: not checked).")
    ] = "",
    token_file: TokenFileOpt = None,
) -> None:
    """After an upgrade: /health, the bundle version, a real request for every tenant."""
    try:
        problems = rolling.verify(inventory, edge, version or None, read_token_or_exit(token_file))
    except (rolling.RollError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    for problem in problems:
        err.print(f"[red]failed:[/] {problem}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_INVALID)
    out.print(f"{edge}: healthy, runs {version or 'its bundle'}, every tenant answered")


@rolling_app.command("wait-dns")
def wait_dns(
    edge: EdgeArg,
    inventory: InventoryOpt,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds.")] = 60.0,
) -> None:
    """Wait until every DNS host answers with EDGE UP (after an undrain)."""
    try:
        states = rolling.wait_in_dns(inventory, edge, timeout, time.sleep, time.monotonic)
    except (rolling.RollError, DnsError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    out.print(json.dumps(states))
    if any(state != "UP" for state in states.values()):
        err.print(f"[red]failed:[/] {edge} not UP on every DNS host after {timeout:.0f} s")
        raise typer.Exit(EXIT_INVALID)


RestartOpt = Annotated[
    bool, typer.Option("--restart", help="Restart nginx on each edge even if unchanged.")
]
UpgradeOpt = Annotated[
    bool, typer.Option("--upgrade-packages", help="Install the newest nginx/Lua packages.")
]


def run_and_report(
    inventory: Path, target: str, batch: int, restart: bool, upgrade: bool, env: dict[str, str]
) -> None:
    """Preflight (printed), then ansible/rolling.yml per region; exit 1 on a refusal or a
    stop, with what stopped it and how to resume."""
    token = env.get("CDNCTL_ADMIN_TOKEN", "")
    plan = _preflight(inventory, target, batch, token)
    _print_preflight(plan)
    if not plan.ok:
        raise typer.Exit(EXIT_INVALID)
    results = rolling.run_roll(
        inventory,
        plan.regions,
        batch=batch,
        restart=restart,
        env=env,
        echo=lambda line: err.print(line, markup=False, highlight=False),
        extra_vars=["openresty_package_state=latest"] if upgrade else [],
    )
    for result in results:
        state = "[green]rolled[/]" if result.ok else "[red]stopped[/]"
        out.print(f"{result.region}: {state} in {result.seconds:.0f} s (log: {result.log})")
        if result.stopped:
            err.print(result.stopped, markup=False, highlight=False)
    if not all(r.ok for r in results) or len(results) < len(plan.regions):
        raise typer.Exit(EXIT_INVALID)


def roll_command(
    target: TargetArg,
    inventory: InventoryOpt,
    batch: BatchOpt = 1,
    restart: RestartOpt = False,
    upgrade_packages: UpgradeOpt = False,
    token_file: TokenFileOpt = None,
) -> None:
    """Roll edges region by region, BATCH at a time: drain in GeoDNS, wait for the TTL and
    open connections, upgrade, verify, undrain (ansible/rolling.yml). Stops at the first
    failure, leaving that edge drained, and says how to resume."""
    env = {**os.environ, "CDNCTL_ADMIN_TOKEN": read_token_or_exit(token_file)}
    run_and_report(inventory, target, batch, restart, upgrade_packages, env)


def register(app: typer.Typer) -> None:
    app.command("roll")(roll_command)
    app.add_typer(rolling_app, name="rolling")
