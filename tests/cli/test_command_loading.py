"""cdnctl loads a command's module only when that command runs: the table of top-level
commands (cli/app.py COMMANDS) is what the modules register, and a drain starts without
the compiler, the tenant model or the renderers."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import typer

from cdnctl.cli import app as app_module
from cdnctl.cli.app import COMMANDS, app


def test_the_command_table_is_what_the_modules_register():
    registered = {}
    for module in sorted(set(COMMANDS.values())):
        group = app_module.module_group(module)
        for name in group.list_commands(click.Context(group)):
            assert name not in registered, (
                f"{name}: registered by {registered.get(name)} and {module}"
            )
            registered[name] = module
    assert registered == COMMANDS


def test_help_lists_every_command_and_an_unknown_one_is_refused():
    group = typer.main.get_command(app)
    ctx = click.Context(group)
    assert group.list_commands(ctx) == list(COMMANDS)
    assert all(group.get_command(ctx, name) is not None for name in COMMANDS)
    assert group.get_command(ctx, "aply") is None


PROBE = """
import json, sys
from typer.testing import CliRunner
from cdnctl.cli.app import app
result = CliRunner().invoke(app, [{command!r}, "--help"])
assert result.exit_code == 0, result.output
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("cdnctl", "jinja2")))))
"""


def loaded_by(command: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout))


def test_a_drain_does_not_load_the_compiler_or_the_tenant_model():
    modules = loaded_by("drain")
    assert "cdnctl.fleet.drain" in modules and "cdnctl.cli.drain" in modules
    # (not pydantic: typer's own adapters import it)
    heavy = {m for m in modules if m.startswith(("cdnctl.bundle", "cdnctl.tenants", "jinja2"))}
    assert not heavy, heavy
    assert "cdnctl.cli.tenants" not in modules and "cdnctl.cli.dns" not in modules


def test_the_probe_sees_a_command_that_needs_the_compiler():
    assert "cdnctl.bundle.compile" in loaded_by("validate")
