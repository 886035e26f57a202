"""`cdnctl inventory ...`: write the Ansible inventory from the Pulumi fleet's outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

import typer

from cdnctl.fleet.inventory import InventoryError, load_stack_output, render_inventory

inventory_app = typer.Typer(no_args_is_help=True)


@inventory_app.callback()
def inventory() -> None:
    """Hand the hosts Pulumi created over to Ansible (inventory files)."""
    # A callback keeps `from-pulumi` a subcommand even while it is the only command.


@inventory_app.command("from-pulumi")
def from_pulumi(
    out: Path = typer.Option(..., "--out", help="Inventory file to write (YAML)."),
    stack_output: Path | None = typer.Option(
        None,
        "--stack-output",
        help="File holding the output of `pulumi stack output --json`.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
    stack: str | None = typer.Option(
        None,
        "--stack",
        help="Read the outputs of this stack with the pulumi CLI (needs `pulumi` on PATH).",
    ),
    project_dir: Path = typer.Option(
        Path("pulumi"), "--project-dir", help="The Pulumi project (with --stack)."
    ),
) -> None:
    """Write an Ansible YAML inventory from the fleet stack's `inventory` output."""
    if (stack_output is None) == (stack is None):
        _fail("pass exactly one of --stack-output FILE or --stack NAME")
    if stack_output is not None:
        source = str(stack_output)
        text = stack_output.read_text(encoding="utf-8")
    else:
        source = f"`pulumi stack output --json --stack {stack}`"
        text = _pulumi_stack_output(stack, project_dir)
    try:
        rendered = render_inventory(load_stack_output(text, source))
    except InventoryError as exc:
        _fail(f"{source}: {exc}")
    _write_atomically(out, rendered)
    typer.echo(f"wrote {out}")


def _pulumi_stack_output(stack: str, project_dir: Path) -> str:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        _fail(
            "the pulumi CLI is not on PATH, so --stack cannot read the outputs; on a machine "
            f"with the CLI run `pulumi stack output --json --stack {stack} --cwd {project_dir} "
            "> outputs.json` and pass --stack-output outputs.json"
        )
    command = [pulumi, "stack", "output", "--json", "--stack", stack, "--cwd", str(project_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _fail(f"`{' '.join(command[1:])}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _write_atomically(path: Path, text: str) -> None:
    # A half-written inventory must never be picked up by a concurrent ansible run.
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    app.add_typer(inventory_app, name="inventory")
