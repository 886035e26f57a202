"""The cdnctl command line: validate, compile, plan and scaffold tenants (and more)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cdnctl import edge_cli, preview_cli
from cdnctl.compile import DEFAULT_CACHE_DIR, CompileResult, compile_paths, tenant_files
from cdnctl.inventory_cli import inventory_app
from cdnctl.plan import GitError, diff_tenants, tenants_at_ref, tenants_of
from cdnctl.policy import Policy, PolicyError, load_policy
from cdnctl.problems import Problem
from cdnctl.scaffold import new_tenant
from cdnctl.schema import render_schema

app = typer.Typer(
    no_args_is_help=True,
    help="Run a multi-tenant CDN as code: tenants in git, edges that apply them live.",
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

EXIT_INVALID = 1
EXIT_USAGE = 2
PROGRESS_FROM = 5000  # show a progress bar from this many tenant files on


class Format(StrEnum):
    text = "text"
    json = "json"


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
FormatOpt = Annotated[Format, typer.Option("--format", help="text for people, json for CI.")]
CacheOpt = Annotated[
    Path, typer.Option("--cache-dir", help="Incremental compile cache (safe to delete).")
]


def _policy(inventory: Path | None) -> Policy:
    try:
        return load_policy(inventory)
    except PolicyError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None


def _run_compile(paths: list[Path], policy: Policy, cache_dir: Path | None) -> CompileResult:
    if err.is_terminal:  # a progress bar only for people, and only for long work
        files, _ = tenant_files(paths)
        if len(files) >= PROGRESS_FROM:
            columns = (*Progress.get_default_columns()[:2], BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("Checking tenants", total=len(files))
                return compile_paths(
                    paths, policy, cache_dir=cache_dir, progress=lambda n: bar.advance(task, n)
                )
    return compile_paths(paths, policy, cache_dir=cache_dir)


def _print_problems(problems: list[Problem], fmt: Format) -> None:
    if fmt is Format.json:
        return
    for problem in problems:
        err.print(problem.render(), markup=False, highlight=False, soft_wrap=True)
    err.print(f"[red]{len(problems)} problem(s)[/] — nothing was compiled or applied.")


@app.command()
def validate(
    paths: PathsArg = None,
    inventory: InventoryOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheOpt = DEFAULT_CACHE_DIR,
) -> None:
    """Check tenant files: schema, fleet-wide policy, domain ownership. Reports every problem.

    Exit status: 0 valid, 1 invalid, 2 usage error.
    """
    policy = _policy(inventory)
    result = _run_compile(paths or [Path("tenants")], policy, cache_dir)
    tenants = sum(1 for r in result.results if r.fragment is not None)
    if fmt is Format.json:
        document = {
            "valid": result.ok,
            "files": len(result.results),
            "problems": [p.to_json() for p in result.problems],
        }
        typer.echo(json.dumps(document, indent=2))
    if not result.ok:
        _print_problems(result.problems, fmt)
        raise typer.Exit(EXIT_INVALID)
    if fmt is Format.text:
        out.print(f"[green]ok[/]: {tenants} tenant(s) valid")


@app.command("compile")
def compile_command(
    paths: PathsArg = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for bundle.json.")] = Path(
        "build"
    ),
    inventory: InventoryOpt = None,
    cache_dir: CacheOpt = DEFAULT_CACHE_DIR,
) -> None:
    """Compile tenants into the bundle edges run (deterministic JSON, content-hash version)."""
    policy = _policy(inventory)
    result = _run_compile(paths or [Path("tenants")], policy, cache_dir)
    if not result.ok or result.bundle is None:
        _print_problems(result.problems, Format.text)
        raise typer.Exit(EXIT_INVALID)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "bundle.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".bundle-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(result.bundle)
    os.replace(tmp, target)
    os.chmod(target, 0o644)
    out.print(f"{target}: {len(result.results)} tenant(s), version {result.version}")


@app.command()
def plan(
    base: Annotated[
        str, typer.Option("--base", help="Git ref to compare the working tree with.")
    ] = "HEAD",
    tenants: Annotated[Path, typer.Option("--tenants", help="Tenant directory.")] = Path("tenants"),
    inventory: InventoryOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheOpt = DEFAULT_CACHE_DIR,
    edge: edge_cli.EdgeOpt = None,
    live: Annotated[
        bool, typer.Option("--live", help="Compare with the running edges of --inventory.")
    ] = False,
    token_file: edge_cli.TokenFileOpt = None,
) -> None:
    """Show what a change does: against a git ref (tenants added, removed, changed fields),
    or with --edge/--live against what each running edge reports it runs."""
    policy = _policy(inventory)
    current = _run_compile([tenants], policy, cache_dir)
    if not current.ok or current.version is None:
        _print_problems(current.problems, fmt)
        raise typer.Exit(EXIT_INVALID)
    if edge or live:
        targets = edge_cli.resolve_targets(edge, inventory)
        token = edge_cli.read_token_or_exit(token_file)
        digests = {r.tenant_id: r.digest for r in current.results if r.tenant_id and r.digest}
        edge_cli.plan_edges(targets, token, current.version, digests, fmt is Format.json)
        return
    try:
        before, base_problems = tenants_at_ref(base, tenants, policy)
    except (GitError, ValueError) as exc:
        err.print(f"[red]error:[/] cannot read {tenants} at {base!r}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if base_problems:
        err.print(
            f"[yellow]warning:[/] {len(base_problems)} problem(s) in {base}: its invalid "
            "tenants are compared as absent"
        )
    result = diff_tenants(base, before, tenants_of(current.results))
    if fmt is Format.json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    if result.empty:
        out.print(f"No changes against {base} ({result.unchanged} tenant(s) unchanged).")
        return
    table = Table(title=f"Plan: working tree vs {base}", show_lines=True)
    table.add_column("Tenant", style="bold")
    table.add_column("Change")
    table.add_column("Fields")
    for tenant in result.added:
        table.add_row(tenant, "[green]add[/]", "")
    for tenant in result.removed:
        table.add_row(tenant, "[red]remove[/]", "")
    for tenant, changes in result.changed.items():
        lines = "\n".join(
            f"{c.field}: {json.dumps(c.before)} → {json.dumps(c.after)}" for c in changes
        )
        table.add_row(tenant, "[yellow]change[/]", lines)
    out.print(table)
    out.print(
        f"{len(result.added)} to add, {len(result.changed)} to change, "
        f"{len(result.removed)} to remove, {result.unchanged} unchanged."
    )


@app.command()
def new(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id (= file name).")],
    domain: Annotated[list[str], typer.Option("--domain", help="Domain served (repeatable).")],
    origin: Annotated[str, typer.Option("--origin", help="Origin URL.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    tenants: Annotated[Path, typer.Option("--tenants", help="Tenant directory.")] = Path("tenants"),
    inventory: InventoryOpt = None,
) -> None:
    """Write a new, valid tenant file from the template (nothing is written if invalid)."""
    path, problems = new_tenant(tenants, tenant_id, domain, origin, name, _policy(inventory))
    if problems:
        _print_problems(problems, Format.text)
        raise typer.Exit(EXIT_INVALID)
    out.print(f"Wrote {path}. Next: cdnctl validate && cdnctl plan, then commit it.")


@app.command()
def schema(
    check: Annotated[
        bool, typer.Option("--check", help="Fail if the checked-in file is stale.")
    ] = False,
    path: Annotated[Path, typer.Option("--path")] = Path("tenants/schema.json"),
) -> None:
    """Write tenants/schema.json (JSON Schema of tenant files, for editors)."""
    text = render_schema()
    if check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            err.print(f"[red]{path} is stale[/]: run `cdnctl schema` and commit it.")
            raise typer.Exit(EXIT_INVALID)
        out.print(f"{path} is up to date")
        return
    path.write_text(text, encoding="utf-8")
    out.print(f"Wrote {path}")


@app.command()
def lab(
    tenants: Annotated[Path, typer.Option("--tenants", help="Tenant directory.")] = Path("tenants"),
    listen: Annotated[str, typer.Option("--listen", help="Public HOST:PORT.")] = "127.0.0.1:8080",
    admin_listen: Annotated[
        str, typer.Option("--admin-listen", help="Admin API HOST:PORT.")
    ] = "127.0.0.1:9145",
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Start, test every tenant through the edge, stop.")
    ] = False,
) -> None:
    """The local CDN: sample origins + a real edge serving tenants/ with live reload."""
    from cdnctl.lab import run_lab  # starts nginx: imported only when asked for
    from cdnctl.preview import PreviewError
    from cdnctl.validate import ValidationFailed

    try:
        healthy = run_lab(
            tenants,
            listen,
            admin_listen,
            smoke_only=smoke,
            echo=lambda s: err.print(s, markup=False),
        )
    except ValidationFailed as exc:
        _print_problems(exc.problems, Format.text)
        raise typer.Exit(EXIT_INVALID) from None
    except (PreviewError, OSError) as exc:
        err.print(f"[red]lab failed:[/] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    if not healthy:
        err.print("[red]lab unhealthy:[/] a tenant did not answer 200 through the edge")
        raise typer.Exit(EXIT_INVALID)


# Commands that act on running edges, and fleet hand-off, after the tenant workflow above.
edge_cli.register(app)
preview_cli.register(app)
app.add_typer(inventory_app, name="inventory")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
