"""The package layering of docs/architecture.md holds: imports only ever point down.

tenants -> bundle -> edge -> fleet -> lab -> cli: a package may import the packages before
it in that order (and `cdnctl.paths`), never one after it. Read from the source with `ast`,
so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "cdnctl"
LAYERS = ("tenants", "bundle", "edge", "fleet", "lab", "cli")
SHARED = {"paths"}  # base modules any package may use


def imported_packages(source: Path) -> set[str]:
    """The first component under `cdnctl.` of every module this file imports."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "cdnctl" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_module_lives_in_a_package_of_the_layering():
    loose = sorted(p.name for p in SRC.glob("*.py") if p.stem not in SHARED | {"__init__"})
    assert not loose, f"put these modules in one of {LAYERS} (docs/architecture.md): {loose}"
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_package_imports_only_the_packages_below_it(package):
    allowed = set(LAYERS[: LAYERS.index(package) + 1]) | SHARED
    upward = {
        f"{source.relative_to(SRC)} imports cdnctl.{name}"
        for source in (SRC / package).rglob("*.py")
        for name in imported_packages(source) - allowed
    }
    assert not upward, f"{package} may import only {sorted(allowed)}: {sorted(upward)}"


def test_the_check_sees_an_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cdnctl.cli.app import app\n", encoding="utf-8")
    assert imported_packages(probe) == {"cli"}
