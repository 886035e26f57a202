"""`cdnctl preview`: serve a tenants directory through a real local edge, live-reloaded.

Compile -> resolve secrets -> start nginx in a private temp prefix -> POST the bundle to its
admin API. Then poll the directory; a valid change is hot-applied through the admin API
(no nginx reload: master and worker PIDs stay), an invalid one prints its problems while
the last good config keeps serving.
"""

from __future__ import annotations

import secrets as token_source
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cdnctl.bundle.compile import compile_tenants
from cdnctl.bundle.format import bundle_json
from cdnctl.bundle.secrets import VAULT_PASSWORD_ENV, SecretResolutionError, resolve_secrets
from cdnctl.edge.admin_client import TOKEN_ENV, AdminClient, Edge, EdgeError
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode
from cdnctl.tenants.validate import ValidationFailed

Printer = Callable[[str], None]


@dataclass
class PreviewOptions:
    tenants: Path
    listen: str
    admin_listen: str
    allow_private_origins: bool = False
    resolve: dict[str, str] = field(default_factory=dict)
    shields: list[str] = field(default_factory=list)
    poll_interval: float = 0.5
    workers: int = 1


class PreviewError(RuntimeError):
    """The preview cannot start (no valid first config, nginx failed, ...)."""


def parse_resolve(entries: list[str]) -> dict[str, str]:
    """curl-like `HOST:IP` entries (also accepts curl's HOST:PORT:IP)."""
    mapping: dict[str, str] = {}
    for entry in entries:
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[-1]:
            raise ValueError(f"--resolve {entry!r}: expected HOST:IP")
        mapping[parts[0].lower()] = parts[-1]
    return mapping


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under `directory`: a change in it means recompile."""
    result: dict[str, tuple[int, int]] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = path.stat()
            result[str(path)] = (info.st_mtime_ns, info.st_size)
    return result


class Preview:
    def __init__(
        self,
        options: PreviewOptions,
        environ: Mapping[str, str],
        echo: Printer = print,
    ) -> None:
        self.options = options
        self.environ = environ
        self.echo = echo
        self.token = environ.get(TOKEN_ENV) or ""
        self.stop_event = threading.Event()
        self.node: EdgeNode | None = None
        self.version: str | None = None
        self._prefix: Path | None = None

    def build(self) -> dict[str, Any] | None:
        """The resolved bundle of the tenants directory, or None after printing problems."""
        try:
            bundle = compile_tenants(
                self.options.tenants, allow_private_origins=self.options.allow_private_origins
            )
        except ValidationFailed as exc:
            self.echo(
                f"invalid tenants ({len(exc.problems)} problem(s)); still serving "
                f"{self.version or 'nothing'}:"
            )
            for problem in exc.problems:
                self.echo("  " + problem.render())
            return None
        try:
            return resolve_secrets(
                bundle, self.environ, vault_secret=self.environ.get(VAULT_PASSWORD_ENV)
            )
        except SecretResolutionError as exc:
            self.echo(str(exc))
            return None

    def apply(self, bundle: dict[str, Any]) -> bool:
        assert self.node is not None
        edge = Edge(name="preview", url=self.node.admin_url)
        try:
            with AdminClient(edge, self.token, timeout=120) as client:
                answer = client.push_bundle(bundle_json(bundle))
        except EdgeError as exc:
            self.echo(f"edge refused the bundle: {exc}")
            return False
        self.version = answer["version"]
        self.echo(f"applied {self.version} ({answer['tenants']} tenants)")
        return True

    def start(self) -> None:
        if not self.token:
            self.token = token_source.token_urlsafe(24)
            self.echo(f"{TOKEN_ENV} not set; generated admin token: {self.token}")
        bundle = self.build()
        if bundle is None:
            raise PreviewError("no valid tenants to start with")
        self._prefix = Path(tempfile.mkdtemp(prefix="cdnctl-preview-"))
        settings = NodeSettings(
            prefix=self._prefix,
            listen=self.options.listen,
            admin_listen=self.options.admin_listen,
            admin_token=self.token,
            resolve=self.options.resolve,
            shields=self.options.shields,
            workers=self.options.workers,
        )
        self.node = EdgeNode(settings).start()
        self.echo(
            f"edge on http://{self.options.listen} (admin http://{self.options.admin_listen}), "
            f"nginx master pid {self.node.master_pid}, prefix {self._prefix}"
        )
        if not self.apply(bundle):
            raise PreviewError("the edge refused the first bundle")

    def watch(self) -> None:
        seen = snapshot(self.options.tenants)
        while not self.stop_event.wait(self.options.poll_interval):
            current = snapshot(self.options.tenants)
            if current == seen:
                continue
            seen = current
            bundle = self.build()
            if bundle is not None and bundle["version"] != self.version:
                self.apply(bundle)

    def stop(self) -> None:
        self.stop_event.set()
        if self.node is not None:
            self.node.stop()
            self.node = None
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def serve_until_signal(self) -> None:
        """Watch the tenants directory until SIGINT/SIGTERM (the caller stops the edge)."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop_event.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self) -> None:
        """Start, watch until SIGINT/SIGTERM, stop."""
        try:
            self.start()
            self.serve_until_signal()
        finally:
            self.stop()
            self.echo("preview stopped")
