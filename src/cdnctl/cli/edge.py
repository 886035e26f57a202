"""CLI commands that act on running edges: apply, purge, and plan against them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cdnctl.bundle.compile import DEFAULT_CACHE_DIR, compile_paths
from cdnctl.bundle.delta import resolved_bundle
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.bundle.rollout import load_plan, smoke_target, write_deltas, write_resolved
from cdnctl.bundle.secrets import VAULT_PASSWORD_ENV, SecretResolutionError, resolve_secrets
from cdnctl.cli.output import EXIT_FAILED, err, fail, out
from cdnctl.edge.admin_client import (
    AdminClient,
    Edge,
    EdgeResult,
    TokenError,
    edges_from_urls,
    fan_out,
    read_token,
)
from cdnctl.edge.push import Pusher
from cdnctl.fleet.targets import edges_from_inventory
from cdnctl.tenants.policy import PolicyError, load_policy

EdgeOpt = Annotated[
    list[str] | None,
    typer.Option("--edge", help="Admin base URL of an edge or shield (repeatable)."),
]
InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        help="Inventory directory: its edges/shields are the targets (when no --edge), and "
        "its group_vars/all/cdn.yml sets the platform policy.",
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help="File holding the admin token (else $CDNCTL_ADMIN_TOKEN)."),
]
TenantsOpt = Annotated[Path, typer.Option("--tenants", help="Tenant directory.")]
VaultPasswordOpt = Annotated[
    Path | None,
    typer.Option("--vault-password-file", help=f"Vault password (else ${VAULT_PASSWORD_ENV})."),
]


def resolve_targets(edge_urls: list[str] | None, inventory: Path | None) -> list[Edge]:
    try:
        if edge_urls:
            return edges_from_urls(edge_urls)
        if inventory is not None:
            return edges_from_inventory(inventory)
    except ValueError as exc:
        raise fail(str(exc)) from None
    raise fail("name the edges: --edge URL (repeatable) or --inventory DIR")


def read_token_or_exit(token_file: Path | None) -> str:
    try:
        return read_token(token_file)
    except TokenError as exc:
        raise fail(str(exc)) from None


def source_commit(tenants: Path) -> str | None:
    """HEAD of the repository holding `tenants`, `-dirty` when the tenants differ from it."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=tenants, capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return None
    dirty = git("status", "--porcelain", "--", ".").stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def vault_secret(vault_password_file: Path | None) -> str | None:
    """The ansible-vault password: from the file, else the environment, else none."""
    if vault_password_file is not None:
        return vault_password_file.read_text(encoding="utf-8").strip()
    return os.environ.get(VAULT_PASSWORD_ENV)


def pusher_for(tenants: Path, inventory: Path | None, vault_password_file: Path | None) -> Pusher:
    """Compile, and check every secret resolves from the environment: what brings each edge
    to the compiled bundle (a delta or the full bundle, see edge/push.py)."""
    try:
        policy = load_policy(inventory)
    except PolicyError as exc:
        raise fail(str(exc)) from None
    result = compile_paths([tenants], policy, cache_dir=DEFAULT_CACHE_DIR)
    if not result.ok or result.bundle is None or result.version is None:
        for problem in result.problems:
            err.print(problem.render(), markup=False, highlight=False)
        raise fail(f"{len(result.problems)} problem(s) — nothing was applied", EXIT_FAILED)
    secret = vault_secret(vault_password_file)
    compiled = result.bundle

    def resolver(bundle: dict[str, Any]) -> dict[str, Any]:
        return resolve_secrets(bundle, os.environ, vault_secret=secret)

    pusher = Pusher(
        compiled,
        result.manifest or b"",
        result.version,
        ManifestStore(DEFAULT_CACHE_DIR),
        resolver,
        lambda: resolved_bundle(compiled, resolver),
    )
    try:
        pusher.prepare()
    except SecretResolutionError as exc:
        raise fail(f"{exc} — nothing was applied", EXIT_FAILED) from None
    return pusher


def short(version: Any) -> str:
    text = str(version or "-")
    return text.removeprefix("sha256:")[:12]


def _results_table(title: str, results: list[EdgeResult], columns: dict[str, str]) -> Table:
    table = Table(title=title)
    table.add_column("Edge", style="bold")
    table.add_column("Result")
    for header in columns:
        table.add_column(header)
    table.add_column("Latency", justify="right")
    for result in results:
        cells = [
            short(result.detail.get(key))
            if key in ("version", "previous") and result.detail
            else str((result.detail or {}).get(key, "-"))
            for key in columns.values()
        ]
        status = "[green]ok[/]" if result.ok else "[red]failed[/]"
        table.add_row(result.edge.name, status, *cells, f"{result.seconds * 1000:.0f} ms")
    return table


def _print_results(title: str, results: list[EdgeResult], columns: dict[str, str]) -> None:
    """The per-edge table, then each failure's full reason (too long for a table cell)."""
    out.print(_results_table(title, results, columns))
    for result in results:
        if not result.ok:
            out.print(f"[red]{result.edge.name}[/]: {result.error}", highlight=False)


def apply(
    edge: EdgeOpt = None,
    inventory: InventoryOpt = None,
    tenants: TenantsOpt = Path("tenants"),
    token_file: TokenFileOpt = None,
    commit: Annotated[
        str | None, typer.Option("--commit", help="Commit recorded on the edges (default: HEAD).")
    ] = None,
    vault_password_file: VaultPasswordOpt = None,
) -> None:
    """Compile tenants and bring running edges to it (live, no nginx reload): a delta to an
    edge that runs a version compiled here before, else the full bundle."""
    targets = resolve_targets(edge, inventory)
    token = read_token_or_exit(token_file)
    pusher = pusher_for(tenants, inventory, vault_password_file)
    commit = commit or source_commit(tenants)
    results = fan_out(targets, token, lambda client: pusher.push(client, commit))
    _print_results(
        f"Apply {short(pusher.version)} ({_size(len(pusher.bundle))} compiled)",
        results,
        {
            "Version": "version",
            "Previous": "previous",
            "Tenants": "tenants",
            "Changed": "changed",
            "Removed": "removed",
        },
    )
    for result in results:
        if result.detail:
            sent, count = result.detail["sent"], result.detail["bytes"]
            size = f" ({_size(count)})" if count else ""
            out.print(f"{result.edge.name}: sent {sent}{size}", highlight=False)
    failed = [r for r in results if not r.ok]
    if failed:
        raise fail(f"{len(failed)} of {len(results)} edge(s) failed", EXIT_FAILED)


def _size(count: int) -> str:
    return f"{count / 1024:.1f} KiB" if count < 1 << 20 else f"{count / (1 << 20):.1f} MiB"


def purge(
    tenant: Annotated[str, typer.Argument(metavar="TENANT", help="Tenant id.")],
    url: Annotated[
        list[str] | None, typer.Option("--url", help="Path (+query) to purge (repeatable).")
    ] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Path prefix.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Surrogate-Key / Cache-Tag.")] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Everything of the tenant.")] = False,
    edge: EdgeOpt = None,
    inventory: InventoryOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Purge a tenant's cached objects on every edge, in parallel."""
    kinds = {"urls": url, "prefix": prefix, "tag": tag, "all": purge_all or None}
    chosen = {kind: value for kind, value in kinds.items() if value}
    if len(chosen) != 1:
        raise fail("give exactly one of --url (repeatable), --prefix, --tag or --all")
    for path in [*(url or []), *([prefix] if prefix else [])]:
        if not path.startswith("/"):
            raise fail(f"{path!r}: purge paths start with '/' (e.g. /img/logo.png)")
    targets = resolve_targets(edge, inventory)
    token = read_token_or_exit(token_file)
    request = {"tenant": tenant, **chosen}
    results = fan_out(targets, token, lambda client: client.purge(request))
    kind = next(iter(chosen))
    _print_results(f"Purge {tenant} ({kind})", results, {"Purged": "purged"})
    failed = [r for r in results if not r.ok]
    if failed:
        raise fail(f"{len(failed)} of {len(results)} edge(s) failed", EXIT_FAILED)


def plan_edges(
    targets: list[Edge],
    token: str,
    version: str,
    digests: dict[str, str],
    fmt_json: bool,
    store: ManifestStore,
) -> None:
    """Per edge: what it runs, which tenants applying the local compile would add, change
    or remove there (by tenant digest), and whether `cdnctl apply` would send it a delta
    (it runs a version compiled here before) or the full bundle."""

    def running(client: AdminClient) -> dict[str, Any]:
        return {**client.running_config(), "tenants": client.running_tenants()["tenants"]}

    results = fan_out(targets, token, running, timeout=30.0)
    rows = []
    for result in results:
        running = (result.detail or {}).get("tenants") or {}
        changes = {
            "add": sorted(digests.keys() - running.keys()),
            "change": sorted(
                t for t in digests.keys() & running.keys() if digests[t] != running[t]
            ),
            "remove": sorted(running.keys() - digests.keys()),
        }
        running_version = (result.detail or {}).get("version")
        send = None
        if not result.ok:
            action = "unreachable"
        elif running_version == version:
            action = "up to date"
        else:
            action = "update"
            send = "delta" if store.load(running_version) is not None else "full"
        rows.append(
            {
                "edge": result.edge.name,
                "url": result.edge.url,
                "running_version": running_version,
                "running_commit": (result.detail or {}).get("commit"),
                "local_version": version,
                "action": action,
                "send": send,
                "tenants": changes if result.ok else None,
                "error": result.error,
            }
        )
    if fmt_json:
        typer.echo(json.dumps({"edges": rows}, indent=2))
    else:
        table = Table(title=f"Plan against running edges (local {short(version)})")
        for header in ("Edge", "Running", "Commit", "Action", "Tenants"):
            table.add_column(header)
        colour = {"up to date": "green", "update": "yellow", "unreachable": "red"}
        for row in rows:
            action = f"[{colour[row['action']]}]{row['action']}[/]"
            if row["send"]:
                action += f" ({row['send']})"
            if row["error"]:
                action += f": {row['error']}"
            commit = (row["running_commit"] or "-")[:12]
            table.add_row(
                row["edge"],
                short(row["running_version"]),
                commit,
                action,
                _tenant_summary(row["tenants"]),
            )
        out.print(table)
    if any(row["action"] == "unreachable" for row in rows):
        raise typer.Exit(EXIT_FAILED)


def _tenant_summary(changes: dict[str, list[str]] | None, shown: int = 5) -> str:
    if not changes:
        return ""
    parts = []
    for kind, tenants in changes.items():
        if tenants:
            more = f" (+{len(tenants) - shown})" if len(tenants) > shown else ""
            parts.append(f"{kind} {len(tenants)}: {', '.join(tenants[:shown])}{more}")
    return "\n".join(parts)


def prepare_rollout(
    bundle_file: Annotated[
        Path, typer.Option("--bundle", help="Compiled bundle.json (cdnctl compile).")
    ],
    out: Annotated[Path, typer.Option("--out", help="New 0600 file for the resolved bundle.")],
    tenants: TenantsOpt = Path("tenants"),
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="`cdnctl plan --format json` output.")
    ] = None,
    vault_password_file: VaultPasswordOpt = None,
    delta_base: Annotated[
        list[str] | None,
        typer.Option(
            "--delta-base",
            help="A version nodes run (repeatable): also write the resolved delta from it, "
            "when its manifest is in the compile cache and the delta is smaller.",
        ),
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option("--cache-dir", help="The compile cache `cdnctl compile` used.")
    ] = DEFAULT_CACHE_DIR,
) -> None:
    """For ansible/tenants.yml: resolve a compiled bundle's secrets into a private file and
    print {version, content, commit, smoke_tenant, smoke_domain, deltas} as JSON (`content`:
    the SHA-256 of the resolved bytes, secrets included; `deltas`: base version -> the 0600
    file next to --out holding the resolved delta from it)."""
    raw = bundle_file.read_bytes()
    bundle = json.loads(raw)
    secret = vault_secret(vault_password_file)
    try:
        content = write_resolved(bundle, os.environ, out, secret)
    except SecretResolutionError as exc:
        raise fail(f"{exc} — nothing was rolled out", EXIT_FAILED) from None
    except FileExistsError:
        raise fail(f"{out} exists: the resolved bundle is only ever written fresh") from None
    plan = load_plan(plan_file.read_text(encoding="utf-8") if plan_file else None)
    target = smoke_target(bundle, plan)
    store = ManifestStore(cache_dir)
    deltas = write_deltas(
        raw,
        store.load(bundle["version"]),
        {base: store.load(base) for base in delta_base or []},
        lambda document: resolve_secrets(document, os.environ, vault_secret=secret),
        out,
    )
    document = {
        "version": bundle["version"],
        "content": content,
        "commit": source_commit(tenants),
        "smoke_tenant": target[0] if target else None,
        "smoke_domain": target[1] if target else None,
        "deltas": deltas,
    }
    typer.echo(json.dumps(document))


def register(app: typer.Typer) -> None:
    app.command()(apply)
    app.command()(purge)
    app.command("prepare-rollout")(prepare_rollout)
