"""The CI pipeline examples (.github/workflows/tenants.yml, .gitlab-ci.yml) are valid for
their CI system and call only cdnctl commands and flags that exist."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml

from cdnctl.cli.app import app
from tests.conftest import ROOT

CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
PIPELINES = {
    ".github/workflows/tenants.yml": "vendor.github-workflows",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
}


@pytest.mark.parametrize(("path", "schema"), PIPELINES.items())
def test_pipeline_matches_its_ci_systems_schema(path, schema):
    proc = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(ROOT / path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def shell_lines(node) -> list[str]:
    """Every shell script (`run:` of GitHub steps, `script:` of GitLab jobs) in a pipeline."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key in ("run", "script", "before_script"):
                found += [value] if isinstance(value, str) else list(value)
            else:
                found += shell_lines(value)
        return found
    if isinstance(node, list):
        return [line for item in node for line in shell_lines(item)]
    return []


def cdnctl_calls(path: str) -> list[list[str]]:
    document = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    calls = []
    for script in shell_lines(document):
        for command in script.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            while "cdnctl" in words:
                words = words[words.index("cdnctl") + 1 :]
                end = next((i for i, w in enumerate(words) if w in ("|", ">", ">>", "&&")), None)
                calls.append(words[:end])
    return calls


def unknown_flags(call: list[str]) -> list[str]:
    # typer vendors its own click: walk the command tree with click's get_command (the
    # top level loads its commands lazily, so its `commands` mapping is empty)
    command = typer.main.get_command(app)
    words = list(call)
    while hasattr(command, "get_command") and words and words[0][0] != "-":
        sub = command.get_command(click.Context(command), words.pop(0))
        if sub is None:
            return [f"no command {' '.join(call)!r}"]
        command = sub
    options = {opt for param in command.params for opt in param.opts}
    return [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in options]


@pytest.mark.parametrize("path", PIPELINES)
def test_every_cdnctl_call_exists_with_its_flags(path):
    calls = cdnctl_calls(path)
    assert {call[0] for call in calls} >= {"validate", "plan", "apply"}
    problems = {" ".join(call): unknown_flags(call) for call in calls}
    assert not any(problems.values()), problems


def test_the_flag_check_catches_a_wrong_flag():
    assert unknown_flags(["apply", "--inventory", "x", "--dry-run"]) == ["--dry-run"]
    assert unknown_flags(["aply"]) == ["no command 'aply'"]
