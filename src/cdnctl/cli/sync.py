"""`cdnctl sync`: the GitOps reconciler (thin: the loop lives in cdnctl.fleet.sync)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from cdnctl.cli.edge import TokenFileOpt, VaultPasswordOpt, read_token_or_exit, vault_secret
from cdnctl.cli.output import EXIT_INVALID, err, fail, out
from cdnctl.fleet.sync import CycleResult, Syncer, SyncError, SyncSettings
from cdnctl.fleet.sync_server import SyncServer
from cdnctl.fleet.sync_state import StateError
from cdnctl.tenants.durations import parse_duration
from cdnctl.tenants.problems import InputError

SECRET_ENV = "CDNCTL_SYNC_WEBHOOK_SECRET"
DEFAULT_STATE_DIR = Path("~/.local/state/cdnctl/sync")


def summary(result: CycleResult) -> str:
    """One line for a person: what the cycle did to which commit."""
    commit = (result.commit or "-")[:12]
    if not result.ok:
        return f"{result.outcome} {commit} ({result.reason}): {result.detail}"
    edges = ", ".join(f"{name} {what}" for name, what in sorted(result.edges.items()))
    return f"{result.outcome} {commit}" + (f": {edges}" if edges else "")


def _webhook_secret(secret_file: Path | None) -> bytes | None:
    if secret_file is not None:
        try:
            return secret_file.read_bytes().strip()
        except OSError as exc:
            raise fail(f"--secret-file {secret_file}: {exc.strerror}") from None
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else None


def sync_command(
    repo: Annotated[
        str, typer.Option("--repo", help="Repository to follow: a path or any URL git clones.")
    ],
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory",
            envvar="CDNCTL_INVENTORY",
            help="Inventory directory: its edges (cdn_region, addresses, admin port) and "
            "group_vars/all/cdn.yml (policy).",
        ),
    ],
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "main",
    interval: Annotated[
        str, typer.Option("--interval", help="Time between cycles (30s, 5m).")
    ] = "5s",
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Run one cycle; exit 0 when the fleet is on a good commit, 1 when the "
            "commit was rejected.",
        ),
    ] = False,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="ADDRESS:PORT serving GET /metrics and POST /hook (a webhook signed with "
            "the shared secret, X-Hub-Signature-256) that starts a cycle at once.",
        ),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help=f"The webhook's shared secret (else ${SECRET_ENV})."),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="The clone, compile cache and state file."),
    ] = DEFAULT_STATE_DIR,
    tenants_dir: Annotated[
        str, typer.Option("--tenants-dir", help="Tenant directory inside the repository.")
    ] = "tenants",
    canary_window: Annotated[
        float,
        typer.Option("--canary-window", min=0, help="Seconds the canaries' 5xx ratio is watched."),
    ] = 1.0,
    token_file: TokenFileOpt = None,
    vault_password_file: VaultPasswordOpt = None,
) -> None:
    """Follow a branch of tenant files: validate, compile, canary one edge per region,
    apply to the rest, roll back what fails (JSON log lines on stderr)."""
    try:
        seconds = parse_duration(interval, maximum=86400, minimum=1)
    except InputError as exc:
        raise fail(f"--interval {interval!r}: {exc}") from None
    secret = _webhook_secret(secret_file)
    if listen and secret is None:
        raise fail(f"--listen needs the webhook's secret: --secret-file FILE or ${SECRET_ENV}")
    work = state_dir.expanduser()
    settings = SyncSettings(
        repo=repo,
        branch=branch,
        inventory=inventory,
        workdir=work,
        state_file=work / "state.json",
        token=read_token_or_exit(token_file),
        tenants_dir=tenants_dir,
        vault_secret=vault_secret(vault_password_file),
        canary_window=canary_window,
    )
    try:
        syncer = Syncer(settings)
    except StateError as exc:
        raise fail(str(exc)) from None
    if once:
        try:
            result = syncer.cycle()
        except SyncError as exc:
            raise fail(str(exc)) from None  # the inventory or policy: nothing ran
        out.print(summary(result), highlight=False, markup=False)
        raise typer.Exit(0 if result.ok else EXIT_INVALID)
    _loop(syncer, float(seconds), listen, secret)


def _loop(syncer: Syncer, interval: float, listen: str | None, secret: bytes | None) -> None:
    trigger, stopping = threading.Event(), threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        trigger.set()  # wakes the wait between cycles

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if listen:
        try:
            server = SyncServer(listen, syncer.metrics, trigger, secret).start()
        except (OSError, ValueError) as exc:
            raise fail(f"--listen {listen}: {exc}") from None
        err.print(f"listening on {server.address} (GET /metrics, POST /hook)", highlight=False)

    def report(result: CycleResult) -> None:
        if result.outcome != "unchanged":
            out.print(summary(result), highlight=False, markup=False)

    try:
        syncer.run_forever(interval, trigger, stopping.is_set, report)
    finally:
        if server is not None:
            server.stop()


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_command)
