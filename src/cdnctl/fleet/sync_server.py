"""The sync loop's HTTP listener: `GET /metrics` (Prometheus text) and `POST /hook`, a
webhook that starts a cycle at once.

The webhook is authenticated like GitHub's: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256
of the request body with the shared secret>`; a missing or wrong signature gets 401 and
triggers nothing. The body itself is not used: the cycle fetches the branch anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cdnctl.fleet.sync import SyncMetrics

SIGNATURE_HEADER = "X-Hub-Signature-256"
MAX_BODY = 1 << 20


def signature(secret: bytes, body: bytes) -> str:
    """The X-Hub-Signature-256 value for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class SyncServer:
    def __init__(
        self, address: str, metrics: SyncMetrics, trigger: threading.Event, secret: bytes | None
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen {address!r}: expected ADDRESS:PORT, e.g. 127.0.0.1:9180")
        handler = _handler(metrics, trigger, secret)
        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> SyncServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(
    metrics: SyncMetrics, trigger: threading.Event, secret: bytes | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the sync loop logs JSON; no access log lines on stderr

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, metrics.render().encode(), "text/plain; version=0.0.4")
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            if self.path != "/hook":
                self._send(404, b"not found\n")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, b"body too large\n")
                return
            body = self.rfile.read(length)
            given = self.headers.get(SIGNATURE_HEADER, "")
            if secret is None or not hmac.compare_digest(given, signature(secret, body)):
                self._send(401, b"bad or missing X-Hub-Signature-256\n")
                return
            trigger.set()
            self._send(202, b"sync triggered\n")

    return Handler
