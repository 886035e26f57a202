"""The admin API client: what it waits for."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cdnctl.edge.admin_client import AdminClient, Edge, EdgeError

DELAY = 1.2  # the slow edge's answer time, over the client's 0.5 s timeout


class SlowEdge(BaseHTTPRequestHandler):
    """Answers every request DELAY seconds after reading it, as an edge applying a large
    bundle answers its POST /config once the apply is done."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        time.sleep(DELAY)
        body = json.dumps({"version": "sha256:" + "0" * 64, "bytes": length}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client that gave up closed the connection before the answer


@pytest.fixture
def slow_edge():
    server = QuietServer(("127.0.0.1", 0), SlowEdge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Edge(name="slow", url=f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def test_a_push_waits_for_the_apply_beyond_the_client_timeout(slow_edge):
    """A bundle's answer comes when the edge has applied it (about a minute for 1M new
    tenants): the push waits for it, other calls keep the client's timeout."""
    with AdminClient(slow_edge, "token", timeout=0.5) as client:
        assert client.push_bundle(b'{"format":1}')["bytes"] == 12
        assert client.push_delta(b"{}", commit="abc")["bytes"] == 2
        with pytest.raises(EdgeError, match="ReadTimeout"):
            client.running_config()
