"""Tenant workflow commands: validate, compile, plan, new, schema."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdnctl.bundle.bundle_bytes import BundleBytes
from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.manifest_store import KEEP, ManifestStore
from cdnctl.bundle.plan import (
    GitError,
    changed_files,
    diff_tenants,
    tenants_at_ref,
    tenants_of,
)
from cdnctl.cli import edge as edge_cli
from cdnctl.cli.common import (
    DEFAULT_CACHE_DIR,
    CacheOpt,
    InventoryOpt,
    PathsArg,
    policy_or_exit,
    print_problems,
    run_compile,
)
from cdnctl.cli.output import EXIT_INVALID, EXIT_USAGE, Format, FormatOpt, err, out
from cdnctl.tenants.scaffold import new_tenant
from cdnctl.tenants.schema import render_schema

tenants_commands = typer.Typer()


@tenants_commands.command()
def validate(
    paths: PathsArg = None,
    inventory: InventoryOpt = None,
    fmt: FormatOpt = Format.text,
    cache_dir: CacheOpt = DEFAULT_CACHE_DIR,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="Git ref the change is against (a pull request's target): a domain or id "
            "claimed twice is reported on the file the change adds or edits.",
        ),
    ] = None,
) -> None:
    """Check tenant files: schema, fleet-wide policy, domain ownership. Reports every problem.

    Exit status: 0 valid, 1 invalid, 2 usage error.
    """
    policy = policy_or_exit(inventory)
    paths = paths or [Path("tenants")]
    changed: set[str] = set()
    if base is not None:
        try:
            for path in paths:
                changed |= changed_files(base, path) if path.is_dir() else {str(path)}
        except GitError as exc:
            err.print(f"[red]error:[/] cannot compare with {base!r}: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
    result = run_compile(paths, policy, cache_dir, changed)
    tenants = sum(1 for r in result.results if r.fragment is not None)
    if fmt is Format.json:
        document = {
            "valid": result.ok,
            "files": len(result.results),
            "problems": [p.to_json() for p in result.problems],
        }
        typer.echo(json.dumps(document, indent=2))
    if not result.ok:
        print_problems(result.problems, fmt)
        raise typer.Exit(EXIT_INVALID)
    if fmt is Format.text:
        out.print(f"[green]ok[/]: {tenants} tenant(s) valid")


@tenants_commands.command("compile")
def compile_command(
    paths: PathsArg = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for bundle.json.")] = Path(
        "build"
    ),
    inventory: InventoryOpt = None,
    cache_dir: CacheOpt = DEFAULT_CACHE_DIR,
    delta_from: Annotated[
        str | None,
        typer.Option(
            "--delta-from",
            help="Also write delta.json: the delta from this version (one compiled here "
            "before, e.g. what `cdnctl plan --edge` shows an edge runs) to this bundle.",
        ),
    ] = None,
) -> None:
    """Compile tenants into the bundle edges run (deterministic JSON, content-hash version)."""
    policy = policy_or_exit(inventory)
    result = run_compile(paths or [Path("tenants")], policy, cache_dir)
    bundle = result.bundle_view  # a large bundle stays in its file (mapped), not copied
    if not result.ok or bundle is None or result.manifest is None:
        print_problems(result.problems, Format.text)
        raise typer.Exit(EXIT_INVALID)
    base = ManifestStore(cache_dir).load(delta_from) if delta_from else None
    if delta_from and base is None:
        err.print(
            f"[red]error:[/] --delta-from {delta_from}: no manifest of that version in "
            f"{cache_dir} (only the last {KEEP} compiles are kept): send the full bundle"
        )
        raise typer.Exit(EXIT_USAGE)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "bundle.json"
    _write_public(target, bundle)
    out.print(f"{target}: {len(result.results)} tenant(s), version {result.version}")
    if delta_from and base is not None:
        delta = make_delta(
            bundle, result.manifest, base, delta_from, patched=result.patched, checked=True
        )
        _write_public(out_dir / "delta.json", delta.body)
        out.print(
            f"{out_dir / 'delta.json'}: {delta.changed} tenant(s) added or changed, "
            f"{delta.removed} removed, {len(delta.body)} bytes (full: {len(bundle)})"
        )


def _write_public(target: Path, data: bytes | BundleBytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-")
    with os.fdopen(fd, "wb") as handle:
        if isinstance(data, BundleBytes):
            data.write_to(handle)  # (and hashes it meanwhile, for the delta's `content`)
        else:
            handle.write(data)
    os.replace(tmp, target)
    os.chmod(target, 0o644)


@tenants_commands.command()
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
    policy = policy_or_exit(inventory)
    current = run_compile([tenants], policy, cache_dir)
    if not current.ok or current.version is None:
        print_problems(current.problems, fmt)
        raise typer.Exit(EXIT_INVALID)
    if edge or live:
        targets = edge_cli.resolve_targets(edge, inventory)
        token = edge_cli.read_token_or_exit(token_file)
        digests = {r.tenant_id: r.digest for r in current.results if r.tenant_id and r.digest}
        edge_cli.plan_edges(
            targets,
            token,
            current.version,
            digests,
            fmt is Format.json,
            ManifestStore(cache_dir),
        )
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


@tenants_commands.command()
def new(
    tenant_id: Annotated[str, typer.Argument(metavar="ID", help="Tenant id (= file name).")],
    domain: Annotated[list[str], typer.Option("--domain", help="Domain served (repeatable).")],
    origin: Annotated[str, typer.Option("--origin", help="Origin URL.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    tenants: Annotated[Path, typer.Option("--tenants", help="Tenant directory.")] = Path("tenants"),
    inventory: InventoryOpt = None,
) -> None:
    """Write a new, valid tenant file from the template (nothing is written if invalid)."""
    path, problems = new_tenant(tenants, tenant_id, domain, origin, name, policy_or_exit(inventory))
    if problems:
        print_problems(problems, Format.text)
        raise typer.Exit(EXIT_INVALID)
    out.print(f"Wrote {path}. Next: cdnctl validate && cdnctl plan, then commit it.")


@tenants_commands.command()
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


def register(app: typer.Typer) -> None:
    """validate, compile, plan, new, schema: the tenant workflow."""
    app.registered_commands += tenants_commands.registered_commands
