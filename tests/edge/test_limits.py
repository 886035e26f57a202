"""Request hygiene: methods, rate limits, oversized requests."""

from __future__ import annotations

import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from tests.edge.conftest import raw_request

pytestmark = pytest.mark.integration


@pytest.fixture
def limited(edge, make_origin):
    origin = make_origin("l")
    bundle = make_bundle(
        tenant(
            "l",
            ["l.test"],
            origin.address,
            methods=["GET", "HEAD", "OPTIONS", "DELETE"],
            rate_limit={"requests_per_second": 2, "burst": 3},
        ),
        tenant("u", ["u.test"], origin.address),
    )
    assert edge.apply(bundle).status_code == 200
    return edge, origin


def test_methods_outside_the_tenant_list_are_405(limited):
    edge, origin = limited
    response = edge.request("POST", "u.test", "/x", content=b"a")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert origin.total() == 0
    assert edge.request("PUT", "u.test", "/x").status_code == 405
    assert edge.request("OPTIONS", "u.test", "/x").status_code == 204


def test_listed_non_cacheable_methods_pass_through(limited):
    edge, _ = limited
    response = edge.request("DELETE", "l.test", "/d")
    # The sample origin has no DELETE handler: what matters is that it was reached uncached.
    assert response.headers["X-Cache-Status"] == "BYPASS"
    assert response.status_code == 501


def test_rate_limit_per_client_ip(limited):
    edge, _ = limited
    codes = [edge.get("l.test", f"/r{i}").status_code for i in range(8)]
    assert codes[:4] == [200] * 4
    assert 429 in codes[4:]
    limited_response = edge.get("l.test", "/r")
    assert limited_response.status_code == 429
    assert int(limited_response.headers["Retry-After"]) >= 1
    # Other tenants are not affected.
    assert edge.get("u.test", "/r").status_code == 200


def test_oversized_uri_and_headers_are_rejected(limited):
    edge, origin = limited
    long_uri = "/" + "a" * 9000
    reply = raw_request(
        edge.address,
        f"GET {long_uri} HTTP/1.1\r\nHost: u.test\r\nConnection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 414")
    big = "x" * 9000
    reply = raw_request(
        edge.address,
        f"GET / HTTP/1.1\r\nHost: u.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert reply.startswith(b"HTTP/1.1 400")
    assert origin.total() == 0
