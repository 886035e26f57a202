"""The cdnctl command line: one Typer app, one module per command group (all thin)."""

from __future__ import annotations

import sys

import typer

from cdnctl.cli import dashboards as dashboards_cli
from cdnctl.cli import dns as dns_cli
from cdnctl.cli import edge as edge_cli
from cdnctl.cli import preview as preview_cli
from cdnctl.cli import roll as roll_cli
from cdnctl.cli import stats as stats_cli
from cdnctl.cli import sync as sync_cli
from cdnctl.cli.certs import certs_app
from cdnctl.cli.inventory import inventory_app
from cdnctl.cli.lab import lab_app
from cdnctl.cli.tenants import tenants_commands

app = typer.Typer(
    no_args_is_help=True,
    help="Run a multi-tenant CDN as code: tenants in git, edges that apply them live.",
    pretty_exceptions_enable=False,
)

# The tenant workflow first, then the local lab, commands that act on running edges, and
# the fleet hand-off.
app.registered_commands += tenants_commands.registered_commands
app.add_typer(lab_app, name="lab")
edge_cli.register(app)
dns_cli.register(app)
roll_cli.register(app)
sync_cli.register(app)
preview_cli.register(app)
dashboards_cli.register(app)
stats_cli.register(app)
app.add_typer(inventory_app, name="inventory")
app.add_typer(certs_app, name="certs")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
