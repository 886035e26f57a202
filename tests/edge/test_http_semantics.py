"""HTTP caching semantics (RFC 9111, RFC 9213 CDN-Cache-Control, RFC 5861 stale-*), seen
through the public listener.

The origin is a small raw-socket server on 127.0.0.1 that sends exactly the status line and
header fields each case sets (interim responses and Connection-listed fields included). Every
case that is not about a tenant setting runs twice: against the edge and against a plain
nginx `proxy_cache` in front of the same origin. A case the edge fails is a failure; a case
in KNOWN_GAPS (what nginx's cache cannot do, README "HTTP caching semantics") is expected
to fail on the edge, and then fails the run if plain nginx gets it right.
"""

from __future__ import annotations

import email.utils
import os
import socket
import socketserver
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import NGINX_BINARY, EdgeNode, free_port
from tests.edge.conftest import ADMIN_TOKEN, Node
from tests.edge.test_origin_fetch import issue

pytestmark = pytest.mark.integration

ALL_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


@dataclass
class Route:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    interim: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    drop: bool = False  # close the connection without answering (origin down)
    size: int = 0  # pad the body to this many bytes (compressible text)


class Origin(socketserver.ThreadingTCPServer):
    """Answers each path with its Route; the body names the path, the fetch number and the
    request's Authorization, so a test can tell who a stored response was made for."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.routes: dict[str, Route] = {}
        self.seen: dict[str, list[dict[str, str]]] = defaultdict(list)
        self.lock = threading.Lock()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def route(self, path: str, status: int = 200, *headers: tuple[str, str], **kw) -> None:
        self.routes[path] = Route(status, list(headers), **kw)

    def count(self, path: str) -> int:
        return len(self.seen[path])


class OriginHandler(socketserver.StreamRequestHandler):
    server: Origin

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line.strip():
                return
            method, target, _ = line.decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (raw := self.rfile.readline().decode()) not in ("\r\n", "\n", ""):
                name, _, value = raw.partition(":")
                headers[name.strip().lower()] = value.strip()
            if int(headers.get("content-length", "0")):
                self.rfile.read(int(headers["content-length"]))
            path = target.split("?", 1)[0]
            route = self.server.routes.get(path, Route(404))
            with self.server.lock:
                self.server.seen[path].append(headers)
                n = len(self.server.seen[path])
            if route.drop:
                return
            if not self.answer(method, path, n, route, headers):
                return

    def answer(self, method: str, path: str, n: int, route: Route, request: dict) -> bool:
        out = b""
        for code, fields in route.interim:
            out += f"HTTP/1.1 {code} Interim\r\n".encode()
            out += b"".join(f"{k}: {v}\r\n".encode() for k, v in fields) + b"\r\n"
        status, fields = route.status, list(route.headers)
        names = {k.lower() for k, _ in fields}
        etag = next((v for k, v in fields if k.lower() == "etag"), None)
        if etag and request.get("if-none-match") == etag:
            status = 304
        if "date" not in names:
            fields.append(("Date", http_date(time.time())))
        body = f"{path} #{n} auth={request.get('authorization', '-')}".encode()
        body = body.ljust(route.size, b"x")
        if status == 304 or method == "HEAD":
            body = b""
        if status != 304:
            fields.append(("Content-Length", str(len(body))))
        out += f"HTTP/1.1 {status} Status\r\n".encode()
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in fields) + b"\r\n" + body
        self.wfile.write(out)
        return "close" not in request.get("connection", "")


PLAIN_CONF = """
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=plain:1m use_temp_path=off;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://{origin};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache plain;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"""


class Target:
    """One cache under test, named in the paths it asks for (edge and plain never share)."""

    def __init__(self, name: str, base_url: str, host: str) -> None:
        self.name = name
        self.host = host
        self.client = httpx.Client(base_url=base_url, timeout=10)

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, headers)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.client.request(method, path, headers={"Host": self.host, **(headers or {})})


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Target]:
    prefix = tmp_path_factory.mktemp("plain")
    listen = f"127.0.0.1:{free_port()}"
    conf = prefix / "nginx.conf"
    conf.write_text(
        PLAIN_CONF.format(
            user="user root root;" if os.geteuid() == 0 else "",
            prefix=prefix,
            listen=listen,
            origin=origin.address,
        )
    )
    process = subprocess.Popen(
        [NGINX_BINARY, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host, port = listen.split(":")
    for _ in range(100):
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield Target("plain", f"http://{listen}", "plain.test")
    process.terminate()
    process.wait(10)


def tenants(origin: Origin, shield: bool = False) -> dict:
    def one(tenant_id: str, **settings) -> dict:
        return tenant(
            tenant_id,
            [f"{tenant_id}.test"],
            origin.address,
            default_ttl=0,
            methods=ALL_METHODS,
            shield=shield,
            **settings,
        )

    return make_bundle(
        one("rfc"),
        one("nostale", stale_if_error=0),
        one("heur", heuristic=True, heuristic_max=100),
        one("tgt", targeted_field="Cdnctl-Cache-Control"),
        one("tgtpass", targeted_field="Cdnctl-Cache-Control", targeted_field_to_client=True),
    )


def start_node(prefix: Path, **settings) -> Node:
    return Node(
        EdgeNode(
            NodeSettings(
                prefix=prefix,
                listen=f"127.0.0.1:{free_port()}",
                admin_listen=f"127.0.0.1:{free_port()}",
                admin_token=ADMIN_TOKEN,
                workers=1,
                **settings,
            )
        ).start()
    )


@pytest.fixture(scope="module")
def edge_node(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Node]:
    node = start_node(tmp_path_factory.mktemp("edge"))
    assert node.apply(tenants(origin)).status_code == 200
    yield node
    node.close()


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[Node]:
    """edge -> shield -> origin, for the cases where a shield's answer matters."""
    shield = start_node(tmp_path_factory.mktemp("shield"), mode="shield")
    edge = start_node(tmp_path_factory.mktemp("tiered"), shields=[shield.address])
    for node in (shield, edge):
        assert node.apply(tenants(origin, shield=True)).status_code == 200
    yield edge
    edge.close()
    shield.close()


def edge_target(node: Node, name: str, host: str = "rfc.test") -> Target:
    return Target(name, node.edge.base_url, host)


# --- the cases: f(target, origin, path prefix); they raise AssertionError on a miss -------

CASES: dict[str, Callable[[Target, Origin, str], None]] = {}

# Cases nginx's proxy_cache cannot do (README "HTTP caching semantics" says why): none left.
KNOWN_GAPS: set[str] = set()


def case(fn: Callable[[Target, Origin, str], None]) -> Callable[[Target, Origin, str], None]:
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


def reused(t: Target, o: Origin, path: str, **headers: str) -> bool:
    """Fetch twice; True if the second answer came from the cache."""
    first = t.get(path, headers)
    second = t.get(path, headers)
    assert first.status_code == second.status_code, (first.status_code, second.status_code)
    return o.count(path) == 1 and second.content == first.content


# Point 1: explicit freshness makes any final status storable; caching fields always reach
# the client.
@case
def case_2xx_explicit_freshness(t, o, p):
    o.route(f"{p}/203", 203, ("Cache-Control", "max-age=100000"))
    response = t.get(f"{p}/203")
    assert response.headers.get("Cache-Control") == "max-age=100000"
    assert reused(t, o, f"{p}/203")
    expires = http_date(time.time() + 3600)
    o.route(f"{p}/299", 299, ("Expires", expires))
    assert t.get(f"{p}/299").headers.get("Expires") == expires


@case
def case_3xx_explicit_freshness(t, o, p):
    expires = http_date(time.time() + 3600)
    o.route(f"{p}/303", 303, ("Expires", expires), ("Location", "/elsewhere"))
    response = t.get(f"{p}/303")
    assert response.status_code == 303 and response.headers.get("Expires") == expires
    assert reused(t, o, f"{p}/303")


@case
def case_4xx_explicit_freshness(t, o, p):
    for status in (404, 410):
        o.route(f"{p}/{status}", status, ("Cache-Control", "max-age=100000"))
        assert t.get(f"{p}/{status}").headers.get("Cache-Control") == "max-age=100000"
        assert reused(t, o, f"{p}/{status}")
    expires = http_date(time.time() + 3600)
    o.route(f"{p}/400", 400, ("Expires", expires))
    assert t.get(f"{p}/400").headers.get("Expires") == expires


@case
def case_5xx_explicit_freshness(t, o, p):
    expires = http_date(time.time() + 3600)
    o.route(f"{p}/500", 500, ("Expires", expires))
    assert t.get(f"{p}/500").headers.get("Expires") == expires
    assert reused(t, o, f"{p}/500")


# Point 2: Age counts, and the stored Date is served.
@case
def case_age_of_an_old_response(t, o, p):
    o.route(f"{p}/old", 200, ("Cache-Control", "max-age=3600"), ("Age", "7200"))
    response = t.get(f"{p}/old")
    assert int(response.headers.get("Age", "0")) >= 7200
    assert not reused(t, o, f"{p}/old")  # stale on arrival


# Stale on arrival but with a validator: kept, so the next use is a conditional request (a
# max-age=1 response whose Date is a second behind the edge's clock is one too).
@case
def case_stale_on_arrival_with_a_validator_is_revalidated(t, o, p):
    o.route(f"{p}/oldv", 200, ("Cache-Control", "max-age=3600"), ("Age", "7200"), ("ETag", '"o1"'))
    first = t.get(f"{p}/oldv")
    for _ in range(2):
        again = t.get(f"{p}/oldv")
        assert o.seen[f"{p}/oldv"][-1].get("if-none-match") == '"o1"'
        assert again.status_code == 200 and again.content == first.content
    assert o.count(f"{p}/oldv") == 3  # never served as it is: revalidated on every use


@case
def case_age_adds_up(t, o, p):
    date = http_date(time.time() - 30)
    o.route(f"{p}/a", 200, ("Cache-Control", "max-age=3600"), ("Age", "100"), ("Date", date))
    first = t.get(f"{p}/a")
    second = t.get(f"{p}/a")
    assert o.count(f"{p}/a") == 1
    assert int(first.headers.get("Age", "0")) >= 100
    assert int(second.headers.get("Age", "0")) >= 100
    assert second.headers.get("Date") == date


# Point 3: one real Cache-Control parser.
@case
def case_cache_control_invalid_max_age(t, o, p):
    for n, value in enumerate(['max-age="3600"', "max-age =3600", "max-age= 3600", "max-age=1h"]):
        o.route(f"{p}/{n}", 200, ("Cache-Control", value))
        assert not reused(t, o, f"{p}/{n}"), value


@case
def case_cache_control_tokens_not_substrings(t, o, p):
    values = [
        "x-private, max-age=3600",
        "max-age=3600, no-cachex",
        "MAX-AGE=3600",
        'foo="a, no-store, private", max-age=3600',
    ]
    for n, value in enumerate(values):
        o.route(f"{p}/{n}", 200, ("Cache-Control", value))
        assert reused(t, o, f"{p}/{n}"), value


@case
def case_cache_control_restrictive(t, o, p):
    values = [
        "max-age=3600, max-age=1",  # a conflict: stale
        'private="Set-Cookie", max-age=3600',
        'no-cache="Set-Cookie", max-age=3600',
        "max-age=3600, no-store",
        "max-age=3600",  # with a second field line below
    ]
    for n, value in enumerate(values):
        o.route(f"{p}/{n}", 200, ("Cache-Control", value))
    o.routes[f"{p}/4"].headers.append(("Cache-Control", "private"))
    for n, value in enumerate(values):
        assert not reused(t, o, f"{p}/{n}"), value


# Point 4: Expires against the origin's Date; invalid means expired.
@case
def case_expires_uses_origin_clock(t, o, p):
    ahead = http_date(time.time() + 3600)  # the origin's clock runs an hour ahead
    o.route(f"{p}/skew", 200, ("Date", ahead), ("Expires", ahead))
    assert not reused(t, o, f"{p}/skew")


@case
def case_expires_invalid_is_expired(t, o, p):
    future = time.time() + 3600
    values = ["0", "-1", "garbage", http_date(future).replace("GMT", "PST")]
    for n, value in enumerate(values):
        o.route(f"{p}/{n}", 200, ("Expires", value))
        assert t.get(f"{p}/{n}").headers.get("Expires") == value
        assert not reused(t, o, f"{p}/{n}"), value
    o.route(f"{p}/ok", 200, ("Expires", http_date(future)))
    assert reused(t, o, f"{p}/ok")


# Point 5: what must be revalidated is never served stale; the origin's stale-* count.
@case
def case_must_revalidate_beats_stale_if_error(t, o, p):
    values = ["max-age=1, must-revalidate", "max-age=1, proxy-revalidate", "s-maxage=1"]
    for n, value in enumerate(values):
        o.route(f"{p}/{n}", 200, ("Cache-Control", value))
        assert t.get(f"{p}/{n}").status_code == 200
    time.sleep(2.1)
    for n, value in enumerate(values):
        o.routes[f"{p}/{n}"].drop = True
        assert t.get(f"{p}/{n}").status_code == 504, value


# Point 8: Vary.
@case
def case_vary_star_never_matches(t, o, p):
    for n, value in enumerate(["*", "*, foo", "foo, *", "*, *"]):
        o.route(f"{p}/{n}", 200, ("Cache-Control", "max-age=3600"), ("Vary", value))
        assert not reused(t, o, f"{p}/{n}"), value


# Point 9: conditional requests.
@case
def case_if_none_match_beats_if_modified_since(t, o, p):
    modified = http_date(time.time() - 100)
    o.route(
        f"{p}/c", 200, ("Cache-Control", "max-age=3600"), ("ETag", '"v1"'),
        ("Last-Modified", modified),
    )  # fmt: skip
    t.get(f"{p}/c")
    before = http_date(time.time() - 1000)  # modified since then, by the date alone
    response = t.get(f"{p}/c", {"If-None-Match": '"v1"', "If-Modified-Since": before})
    assert response.status_code == 304
    response = t.get(f"{p}/c", {"If-None-Match": '"v0"', "If-Modified-Since": modified})
    assert response.status_code == 200


@case
def case_stale_is_revalidated(t, o, p):
    o.route(f"{p}/r", 200, ("Cache-Control", "max-age=1"), ("ETag", '"r1"'))
    first = t.get(f"{p}/r")
    time.sleep(2.1)
    again = t.get(f"{p}/r")
    assert o.seen[f"{p}/r"][-1].get("if-none-match") == '"r1"'
    assert again.status_code == 200 and again.content == first.content


@case
def case_no_cache_is_stored_and_revalidated(t, o, p):
    o.route(f"{p}/n", 200, ("Cache-Control", "no-cache"), ("ETag", '"n1"'))
    first = t.get(f"{p}/n")
    for _ in range(2):
        again = t.get(f"{p}/n")
        assert o.seen[f"{p}/n"][-1].get("if-none-match") == '"n1"'
        assert again.content == first.content and again.headers["Cache-Control"] == "no-cache"
    assert o.count(f"{p}/n") == 3  # revalidated before every use, never served as it is


@case
def case_304_updates_stored_headers(t, o, p):
    o.route(f"{p}/u", 200, ("Cache-Control", "max-age=1"), ("ETag", '"u1"'), ("X-V", "1"))
    t.get(f"{p}/u")
    time.sleep(2.1)
    o.route(f"{p}/u", 200, ("Cache-Control", "max-age=3600"), ("ETag", '"u1"'), ("X-V", "2"))
    for _ in range(3):  # the revalidating request, and those served from the cache after it
        response = t.get(f"{p}/u")
        assert response.headers.get("X-V") == "2"
        assert response.headers.get_list("Cache-Control") == ["max-age=3600"]
    assert o.seen[f"{p}/u"][1].get("if-none-match") == '"u1"'


# A 304 that changes nothing is not followed by a full fetch.
def test_unchanged_304_refreshes_without_a_full_fetch(edge_node, tiers, origin):
    for target in (edge_target(edge_node, "edge"), edge_target(tiers, "tiers")):
        path = f"/{target.name}/same304"
        origin.route(path, 200, ("Cache-Control", "max-age=2"), ("ETag", '"s1"'), ("X-V", "1"))
        first = target.get(path)
        time.sleep(3.1)
        assert target.get(path).headers["X-Cache-Status"] == "REVALIDATED"
        again = target.get(path)
        assert again.headers["X-Cache-Status"] == "HIT" and again.content == first.content
        assert origin.count(path) == 2


def test_304_updates_stored_headers_through_a_shield(tiers, origin):
    target = edge_target(tiers, "tiers")
    path = "/tiers/upd304"
    origin.route(path, 200, ("Cache-Control", "max-age=1"), ("ETag", '"w1"'), ("X-V", "1"))
    target.get(path)
    time.sleep(2.1)
    origin.route(path, 200, ("Cache-Control", "max-age=3600"), ("ETag", '"w1"'), ("X-V", "2"))
    for _ in range(3):
        assert target.get(path).headers.get("X-V") == "2"


# Point 10: hop-by-hop fields.
@case
def case_connection_listed_fields_are_dropped(t, o, p):
    o.route(
        f"{p}/h", 200, ("Cache-Control", "max-age=3600"), ("Connection", "X-Hop, Keep-Alive"),
        ("X-Hop", "secret"), ("Keep-Alive", "timeout=5"), ("X-End", "kept"),
    )  # fmt: skip
    for _ in range(2):
        response = t.get(f"{p}/h", {"Connection": "X-Client-Hop", "X-Client-Hop": "1"})
        assert response.headers.get("X-End") == "kept"
        assert "X-Hop" not in response.headers and "Keep-Alive" not in response.headers
    assert "x-client-hop" not in o.seen[f"{p}/h"][-1]


# Point 11: interim responses.
@case
def case_interim_responses_pass(t, o, p):
    o.route(
        f"{p}/i", 200, ("Cache-Control", "max-age=3600"),
        interim=[(103, [("Link", "</s.css>; rel=preload")]), (102, [])],
    )  # fmt: skip
    response = t.client.get(f"{p}/i", headers={"Host": t.host}, timeout=3)
    assert response.status_code == 200 and response.content.startswith(f"{p}/i #".encode())
    assert "Link" not in response.headers  # the 103's fields are not the response's
    # Stored (the interim responses are not): no more origin fetches. The edge's first
    # meeting with such an origin costs one fetch more (README, interim responses).
    fetches = o.count(f"{p}/i")
    for _ in range(2):
        assert t.get(f"{p}/i").content == response.content
    assert o.count(f"{p}/i") == fetches


# Point 12: CDN-Cache-Control over Cache-Control.
@case
def case_cdn_cache_control(t, o, p):
    o.route(f"{p}/on", 200, ("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=3600"))
    assert reused(t, o, f"{p}/on")
    assert t.get(f"{p}/on").headers.get("Cache-Control") == "no-store"
    o.route(f"{p}/off", 200, ("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "no-store"))
    assert not reused(t, o, f"{p}/off")
    # An invalid dictionary is ignored as a whole: Cache-Control decides.
    o.route(f"{p}/bad", 200, ("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=1,"))
    assert not reused(t, o, f"{p}/bad")


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_edge_and_plain_nginx(name, edge_node, plain, origin):
    def passes(target: Target) -> str | None:
        try:
            CASES[name](target, origin, f"/{target.name}/{name}")
        except (AssertionError, httpx.HTTPError) as error:
            return f"{error!r}"
        return None

    edge_failure = passes(edge_target(edge_node, "edge"))
    plain_failure = passes(plain)
    if name in KNOWN_GAPS:
        assert plain_failure is not None, f"{name}: plain nginx gets it right, the edge not"
        pytest.xfail(f"known gap: {edge_failure}")
    assert edge_failure is None, f"{name}: edge fails ({edge_failure}); plain nginx " + (
        "gets it right" if plain_failure is None else f"fails too ({plain_failure})"
    )


# --- edge only: tenant settings and tiers ---------------------------------------------


# Point 6: data exposure. One user's authenticated answer never reaches another.
def test_authorization_responses_never_reach_another_user(edge_node, tiers, origin):
    for target in (edge_target(edge_node, "edge"), edge_target(tiers, "tiers")):
        path = f"/{target.name}/auth"
        origin.route(path, 200, ("Cache-Control", "max-age=3600"))
        alice = target.get(path, {"Authorization": "Bearer alice"})
        bob = target.get(path, {"Authorization": "Bearer bob"})
        anonymous = target.get(path)
        assert alice.content == f"{path} #1 auth=Bearer alice".encode()
        assert bob.content == f"{path} #2 auth=Bearer bob".encode()
        assert b"alice" not in anonymous.content and b"bob" not in anonymous.content
        assert alice.headers["X-Cache-Status"] == bob.headers["X-Cache-Status"] == "BYPASS"
        # `public` lets a shared cache store it; a request with credentials still goes on.
        origin.route(f"{path}/public", 200, ("Cache-Control", "public, max-age=3600"))
        target.get(f"{path}/public", {"Authorization": "Bearer alice"})
        shared = target.get(f"{path}/public")
        assert shared.headers["X-Cache-Status"] == "HIT"
        assert target.get(f"{path}/public", {"Authorization": "Bearer bob"}).content != (
            shared.content
        )


def test_no_cache_is_revalidated_through_a_shield(tiers, origin):
    target = edge_target(tiers, "tiers")
    origin.route("/tiers/nc", 200, ("Cache-Control", "no-cache"), ("ETag", '"t1"'))
    first = target.get("/tiers/nc")
    again = target.get("/tiers/nc")
    assert origin.count("/tiers/nc") == 2
    assert origin.seen["/tiers/nc"][-1].get("if-none-match") == '"t1"'
    assert again.content == first.content
    assert again.headers["X-Cache-Status"] == "REVALIDATED"


# A no-cache response without a validator cannot be revalidated: fetched every time.
def test_no_cache_without_validator_is_fetched_each_time(edge_node, origin):
    target = edge_target(edge_node, "edge")
    origin.route("/edge/nc-plain", 200, ("Cache-Control", "no-cache"))
    bodies = {target.get("/edge/nc-plain").content for _ in range(2)}
    assert len(bodies) == 2 and origin.count("/edge/nc-plain") == 2
    assert "if-none-match" not in origin.seen["/edge/nc-plain"][-1]


# Stored without a TTL of its own, a no-cache response is still in the purge index.
def test_no_cache_response_is_purged_by_prefix(edge_node, origin):
    target = edge_target(edge_node, "edge")
    origin.route("/edge/ncp/a", 200, ("Cache-Control", "no-cache"), ("ETag", '"p1"'))
    target.get("/edge/ncp/a")
    response = edge_node.purge({"tenant": "rfc", "prefix": "/edge/ncp/"})
    assert response.json()["purged"] == 1
    assert target.get("/edge/ncp/a").headers["X-Cache-Status"] == "MISS"
    assert "if-none-match" not in origin.seen["/edge/ncp/a"][-1]


def test_age_counts_through_a_shield(tiers, origin):
    target = edge_target(tiers, "tiers")
    origin.route("/tiers/age", 200, ("Cache-Control", "max-age=3600"), ("Age", "7200"))
    assert not reused(target, origin, "/tiers/age")
    origin.route("/tiers/young", 200, ("Cache-Control", "max-age=3600"), ("Age", "60"))
    assert reused(target, origin, "/tiers/young")
    assert int(target.get("/tiers/young").headers["Age"]) >= 60


# Point 5: the origin's stale-if-error counts where the tenant allows none.
def test_origin_stale_if_error(edge_node, origin):
    target = edge_target(edge_node, "edge", "nostale.test")
    origin.route("/nostale/sie", 200, ("Cache-Control", "max-age=1, stale-if-error=600"))
    origin.route("/nostale/none", 200, ("Cache-Control", "max-age=1"))
    for path in ("/nostale/sie", "/nostale/none"):
        assert target.get(path).status_code == 200
    time.sleep(2.1)
    for path in ("/nostale/sie", "/nostale/none"):
        origin.routes[path].drop = True
    response = target.get("/nostale/sie")
    assert (response.status_code, response.headers["X-Cache-Status"]) == (200, "STALE")
    assert target.get("/nostale/none").status_code == 504


# Point 7: unsafe methods invalidate.
def test_unsafe_methods_invalidate(edge_node, origin):
    target = edge_target(edge_node, "edge")
    for path in ("/inv/a", "/inv/b", "/inv/c"):
        origin.route(path, 200, ("Cache-Control", "max-age=3600"))
        target.get(path)
    origin.routes["/inv/a"].headers += [("Location", "/inv/b")]
    origin.routes["/inv/a"].headers += [("Content-Location", "http://rfc.test/inv/c")]
    assert target.get("/inv/a").headers["X-Cache-Status"] == "HIT"
    assert target.request("POST", "/inv/a").status_code == 200
    for path in ("/inv/a", "/inv/b", "/inv/c"):
        assert target.get(path).headers["X-Cache-Status"] == "MISS", path
    # A failed unsafe request invalidates nothing; other-origin Locations are not ours.
    origin.route("/inv/d", 200, ("Cache-Control", "max-age=3600"))
    target.get("/inv/d")
    origin.route("/inv/gone", 404, ("Location", "/inv/d"))
    target.request("DELETE", "/inv/gone")
    origin.route("/inv/e", 200, ("Location", "http://other.test/inv/d"))
    target.request("PUT", "/inv/e")
    assert target.get("/inv/d").headers["X-Cache-Status"] == "HIT"


# Point 8: Accept-Encoding variants keep working.
def test_vary_accept_encoding_with_compression(edge_node, origin):
    target = edge_target(edge_node, "edge")
    origin.route(
        "/enc/t.css", 200, ("Cache-Control", "max-age=3600"), ("Vary", "Accept-Encoding"),
        ("Content-Type", "text/css"), size=4096,
    )  # fmt: skip
    plain_body = target.get("/enc/t.css", {"Accept-Encoding": "identity"})
    # nginx keys a variant by the client's Accept-Encoding: one fetch per spelling at most.
    for _ in range(2):
        for encoding in ("gzip", "br", "identity"):
            raw = httpx.get(
                f"{edge_node.edge.base_url}/enc/t.css",
                headers={"Host": "rfc.test", "Accept-Encoding": encoding},
            )
            assert raw.headers.get("Content-Encoding", "identity") == encoding
            if encoding != "br":  # httpx decodes gzip, not brotli
                assert raw.content[14:] == plain_body.content[14:]
    assert origin.count("/enc/t.css") <= 3


# Point 11 beyond the edge alone: through a shield, once known a request with a body is
# relayed too, and an HTTPS origin is still verified and given its SNI name.
def test_interim_responses_through_a_shield_and_with_a_body(tiers, origin):
    target = edge_target(tiers, "tiers")
    path = "/tiers/interim"
    origin.route(path, 200, ("Cache-Control", "max-age=3600"), interim=[(103, [("Link", "<a>")])])
    response = target.client.get(path, headers={"Host": target.host}, timeout=5)
    assert response.status_code == 200 and response.content.startswith(f"{path} #".encode())
    fetches = origin.count(path)
    assert target.get(path).content == response.content and origin.count(path) == fetches
    origin.route(f"{path}/post", 200, interim=[(102, [])])
    posted = target.client.post(
        f"{path}/post", headers={"Host": target.host}, content=b"hello", timeout=5
    )
    assert posted.status_code == 200 and origin.count(f"{path}/post") == 1
    assert origin.seen[f"{path}/post"][-1]["content-length"] == "5"


def test_interim_responses_from_an_https_origin(tmp_path):
    ca_file, context = issue(tmp_path, "origin.tls.test")
    server = Origin()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    node = start_node(
        tmp_path / "edge", trusted_ca=ca_file, resolve={"origin.tls.test": "127.0.0.1"}
    )
    try:
        bundle = make_bundle(
            tenant("tls", ["tls.test"], f"origin.tls.test:{port}", scheme="https", default_ttl=0)
        )
        assert node.apply(bundle).status_code == 200
        target = edge_target(node, "tls", "tls.test")
        for n in range(2):  # the first meets the 103, the second is relayed from the start
            server.route(f"/i{n}", 200, ("Cache-Control", "max-age=60"), interim=[(103, [])])
            response = target.client.get(f"/i{n}", headers={"Host": "tls.test"}, timeout=5)
            assert response.status_code == 200, response.text
            assert response.content.startswith(f"/i{n} #".encode())
    finally:
        node.close()
        server.shutdown()
        server.server_close()


# Point 12: the tenant's targeted field, Surrogate-Control, and whether clients see them.
def test_targeted_field_and_surrogate_control(edge_node, origin):
    for host, to_client in (("tgt.test", False), ("tgtpass.test", True)):
        target = edge_target(edge_node, "edge", host)
        path = f"/{host}/targeted"
        origin.route(
            path, 200, ("Cache-Control", "no-store"), ("CDN-Cache-Control", "no-store"),
            ("Cdnctl-Cache-Control", "max-age=3600"),
        )  # fmt: skip
        assert reused(target, origin, path)
        seen = target.get(path).headers
        assert ("Cdnctl-Cache-Control" in seen) is to_client
        assert seen["CDN-Cache-Control"] == "no-store"
        origin.route(
            f"{path}/sc", 200, ("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=60")
        )
        assert reused(target, origin, f"{path}/sc")
        assert ("Surrogate-Control" in target.get(f"{path}/sc").headers) is to_client
        # An invalid targeted field falls back to CDN-Cache-Control.
        origin.route(
            f"{path}/bad", 200, ("Cdnctl-Cache-Control", "max-age=\"x"),
            ("CDN-Cache-Control", "no-store"), ("Cache-Control", "max-age=3600"),
        )  # fmt: skip
        assert not reused(target, origin, f"{path}/bad")


def test_targeted_field_reaches_the_edge_through_a_shield(tiers, origin):
    target = edge_target(tiers, "tiers", "tgt.test")
    origin.route(
        "/tiers/tgt", 200, ("Cache-Control", "no-store"), ("Cdnctl-Cache-Control", "max-age=60")
    )
    assert reused(target, origin, "/tiers/tgt")
    assert "Cdnctl-Cache-Control" not in target.get("/tiers/tgt").headers


# Point 13: heuristic freshness, and default_ttl: 0 means no reuse.
def test_heuristic_freshness(edge_node, origin):
    heur = edge_target(edge_node, "edge", "heur.test")
    rfc = edge_target(edge_node, "edge", "rfc.test")
    modified = http_date(time.time() - 1000)  # 10 %: 100 s
    origin.route("/heur/a", 200, ("Last-Modified", modified))
    assert reused(heur, origin, "/heur/a")
    origin.route("/heur/b", 200, ("Last-Modified", modified))
    assert not reused(rfc, origin, "/heur/b")  # default_ttl: 0
    # Capped at heuristic_max (100 s): an Age of 150 makes it stale although 10 days ago
    # would give 1 day.
    ancient = http_date(time.time() - 10 * 86400)
    origin.route("/heur/c", 200, ("Last-Modified", ancient), ("Age", "150"))
    assert not reused(heur, origin, "/heur/c")
    # Only heuristically cacheable statuses.
    origin.route("/heur/d", 302, ("Last-Modified", modified), ("Location", "/x"))
    assert not reused(heur, origin, "/heur/d")
    origin.route("/heur/e", 404, ("Last-Modified", modified))
    assert reused(heur, origin, "/heur/e")
