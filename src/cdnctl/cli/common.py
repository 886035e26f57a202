"""What the tenant commands share: the compile with its progress bar, policy, problems (the
consoles, exit codes and output format: output.py)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from cdnctl.bundle.compile import DEFAULT_CACHE_DIR, CompileResult, compile_paths, tenant_files
from cdnctl.cli.output import EXIT_USAGE, Format, err
from cdnctl.tenants.policy import Policy, PolicyError, load_policy
from cdnctl.tenants.problems import Problem

PROGRESS_FROM = 5000  # show a progress bar from this many tenant files on


PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Tenant files or directories (default: tenants/).", show_default=False),
]
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        help="Inventory directory whose group_vars/all/cdn.yml sets the platform policy.",
    ),
]
CacheOpt = Annotated[
    Path, typer.Option("--cache-dir", help="Incremental compile cache (safe to delete).")
]


def policy_or_exit(inventory: Path | None) -> Policy:
    try:
        return load_policy(inventory)
    except PolicyError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None


def run_compile(
    paths: list[Path],
    policy: Policy,
    cache_dir: Path | None,
    changed: Collection[str] = frozenset(),
) -> CompileResult:
    if err.is_terminal:  # a progress bar only for people, and only for long work
        files, _ = tenant_files(paths)
        if len(files) >= PROGRESS_FROM:
            columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("Checking tenants", total=len(files))
                return compile_paths(
                    paths,
                    policy,
                    cache_dir=cache_dir,
                    progress=lambda n: bar.advance(task, n),
                    changed=changed,
                )
    return compile_paths(paths, policy, cache_dir=cache_dir, changed=changed)


def print_problems(problems: list[Problem], fmt: Format) -> None:
    if fmt is Format.json:
        return
    for problem in problems:
        err.print(problem.render(), markup=False, highlight=False, soft_wrap=True)
    err.print(f"[red]{len(problems)} problem(s)[/] — nothing was compiled or applied.")


__all__ = ["DEFAULT_CACHE_DIR"]
