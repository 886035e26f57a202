"""The cdnctl command line: one Typer app, one module per command group (all thin).

A command's module is imported when that command runs (or for the help that lists it):
`cdnctl drain` starts without the compiler, the tenant model or the renderers that other
commands need (0.2 s instead of 0.75 s before it does anything). COMMANDS names the module
that registers each top-level command; tests/cli checks it against what the modules
register.
"""

from __future__ import annotations

import functools
import importlib
import sys

import click
import typer
from typer.core import TyperGroup

# Top-level command -> the cli module whose register(app) adds it, in the order `--help`
# lists them: the tenant workflow first, then commands that act on running edges and DNS,
# the fleet hand-off, then the command groups.
COMMANDS: dict[str, str] = {
    "validate": "tenants",
    "compile": "tenants",
    "plan": "tenants",
    "new": "tenants",
    "schema": "tenants",
    "apply": "edge",
    "purge": "edge",
    "prepare-rollout": "edge",
    "drain": "drain",
    "undrain": "drain",
    "roll": "roll",
    "sync": "sync",
    "preview": "preview",
    "dashboards": "dashboards",
    "stats": "stats",
    "lab": "lab",
    "dns": "dns",
    "rolling": "roll",
    "inventory": "inventory",
    "certs": "certs",
}


@functools.cache
def module_group(module: str) -> click.Group:
    """The commands `cdnctl.cli.<module>` registers, as a click group of their own."""
    commands = typer.Typer()
    importlib.import_module(f"cdnctl.cli.{module}").register(commands)
    return typer.main.get_group(commands)


class LazyGroup(TyperGroup):
    """cdnctl's top-level group: its commands come from their modules when first asked for
    (click's get_command/list_commands, which every caller goes through)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return None if module is None else module_group(module).get_command(ctx, cmd_name)


app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def cdnctl() -> None:
    """Run a multi-tenant CDN as code: tenants in git, edges that apply them live."""


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
