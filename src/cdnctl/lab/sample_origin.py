"""A customer origin for tests and the lab: threaded HTTP/1.1 keep-alive server.

Bodies are deterministic per tenant and path (`body_for`), so a test can tell whose bytes it
got. Behaviour per path prefix (Cache-Control, Set-Cookie, Surrogate-Key, status, delay,
size) is set with `behave()`; `counts` tells how many requests reached each path. Optional
basic auth and TLS (records the SNI names it saw); Range requests get 206. `stop()` also cuts
keep-alive connections. Listens on 127.0.0.x only.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import typer


@dataclass
class Behaviour:
    cache_control: str | None = "max-age=300"
    expires: str | None = None
    set_cookie: str | None = None
    surrogate_key: str | None = None
    cache_tag: str | None = None
    content_type: str = "application/octet-stream"
    status: int = 200
    delay: float = 0.0
    size: int = 1024
    extra_headers: dict[str, str] = field(default_factory=dict)


RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def body_for(tenant: str, path: str, size: int) -> bytes:
    """The deterministic body of `path` (with query) for `tenant`."""
    unit = f"{tenant}:{path}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    origin: SampleOrigin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def setup(self) -> None:
        super().setup()
        self.server.origin.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.origin.track(self.connection, open_=False)
        super().finish()

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._serve(send_body=True)

    def do_OPTIONS(self) -> None:
        self.server.origin.record(self)
        self._reply(204, b"", {"Allow": "GET, HEAD, POST, OPTIONS"}, send_body=False)

    def _serve(self, send_body: bool) -> None:
        origin = self.server.origin
        origin.record(self)
        behaviour = origin.behaviour_for(self.path)
        if origin.expected_auth and self.headers.get("Authorization") != origin.expected_auth:
            self._reply(401, b"auth required\n", {"WWW-Authenticate": 'Basic realm="o"'}, True)
            return
        if behaviour.delay:
            time.sleep(behaviour.delay)
        body = body_for(origin.tenant, self.path, behaviour.size)
        headers: dict[str, str] = {"Content-Type": behaviour.content_type}
        for name, value in (
            ("Cache-Control", behaviour.cache_control),
            ("Expires", behaviour.expires),
            ("Set-Cookie", behaviour.set_cookie),
            ("Surrogate-Key", behaviour.surrogate_key),
            ("Cache-Tag", behaviour.cache_tag),
        ):
            if value is not None:
                headers[name] = value
        headers.update(behaviour.extra_headers)
        headers["Accept-Ranges"] = "bytes"
        status = behaviour.status
        match = RANGE.match(self.headers.get("Range", ""))
        if status == 200 and match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                end = min(int(last), len(body) - 1) if last else len(body) - 1
            else:
                start, end = max(0, len(body) - int(last)), len(body) - 1
            if start >= len(body):
                self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"}, send_body)
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body, status = body[start : end + 1], 206
        self._reply(status, body, headers, send_body)

    def _reply(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


class SampleOrigin:
    """Start with `with SampleOrigin(tenant="a") as origin:`; `origin.port` is the port."""

    def __init__(
        self,
        tenant: str = "origin",
        host: str = "127.0.0.1",
        port: int = 0,
        basic_auth: tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not host.startswith("127."):
            raise ValueError("the sample origin listens on 127.0.0.0/8 only")
        self.tenant = tenant
        self.host = host
        self.requested_port = port
        self.expected_auth = (
            "Basic " + base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            if basic_auth
            else None
        )
        self.tls = tls
        self.sni_seen: list[str | None] = []
        self.default = Behaviour()
        self.behaviours: dict[str, Behaviour] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "origin not started"
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def behave(self, prefix: str, **changes: object) -> Behaviour:
        """Set the behaviour of paths starting with `prefix` (longest prefix wins)."""
        behaviour = Behaviour(**changes)  # type: ignore[arg-type]
        self.behaviours[prefix] = behaviour
        return behaviour

    def behaviour_for(self, path: str) -> Behaviour:
        best = ""
        for prefix in self.behaviours:
            if path.startswith(prefix) and len(prefix) > len(best):
                best = prefix
        return self.behaviours[best] if best else self.default

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.counts[handler.path] += 1
            self.seen.append(SeenRequest(handler.command, handler.path, dict(handler.headers)))

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _record_sni(
        self, sock: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        with self._lock:
            self.sni_seen.append(server_name)

    def count(self, path: str) -> int:
        with self._lock:
            return self.counts[path]

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def start(self) -> SampleOrigin:
        server = _Server((self.host, self.requested_port), _Handler, bind_and_activate=True)
        server.origin = self
        if self.tls is not None:
            self.tls.sni_callback = self._record_sni
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut keep-alive connections too: a dead origin, for real."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SampleOrigin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(
    listen: str = typer.Option("127.0.0.1:9000", help="127.0.0.x:PORT"),
    tenant: str = typer.Option("origin", help="tenant name baked into the bodies"),
    basic_auth: str | None = typer.Option(None, help="USER:PASSWORD required from clients"),
) -> None:
    """Run a sample origin in the foreground (for the lab)."""
    host, _, port = listen.rpartition(":")
    auth = tuple(basic_auth.split(":", 1)) if basic_auth else None
    origin = SampleOrigin(tenant=tenant, host=host, port=int(port), basic_auth=auth)  # type: ignore[arg-type]
    origin.start()
    typer.echo(f"sample origin for {tenant} on {origin.address}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        origin.stop()


if __name__ == "__main__":
    typer.run(main)
