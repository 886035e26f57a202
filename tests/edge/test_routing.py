"""Host -> tenant mapping, hostile Host headers, cache-key isolation and normalisation."""

from __future__ import annotations

import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.lab.sample_origin import body_for
from tests.edge.conftest import raw_request

pytestmark = pytest.mark.integration


@pytest.fixture
def two_tenants(edge, make_origin):
    origin_a = make_origin("a")
    origin_b = make_origin("b")
    bundle = make_bundle(
        tenant("a", ["cdn.a.test"], origin_a.address),
        tenant("b", ["cdn.b.test", "*.b.test"], origin_b.address),
    )
    assert edge.apply(bundle).status_code == 200
    return edge, origin_a, origin_b


def test_exact_host_is_normalised(two_tenants):
    edge, origin_a, _ = two_tenants
    for host in ("cdn.a.test", "CDN.A.TEST", "cdn.a.test:8080", "cdn.a.test."):
        response = edge.get(host, "/x")
        assert response.status_code == 200, host
        assert response.content == body_for("a", "/x", 1024)
    assert origin_a.count("/x") == 1


def test_wildcard_maps_one_label(two_tenants):
    edge, _, _ = two_tenants
    response = edge.get("shop.b.test", "/w")
    assert response.status_code == 200
    assert response.content == body_for("b", "/w", 1024)
    assert edge.get("deep.shop.b.test", "/w").status_code == 404


def test_unknown_host_is_404_json_naming_it(two_tenants):
    edge, origin_a, origin_b = two_tenants
    response = edge.get("evil.test", "/x")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown host", "host": "evil.test"}
    assert origin_a.total() == origin_b.total() == 0


def test_hostile_host_headers_never_select_another_tenant(two_tenants):
    edge, _, origin_b = two_tenants
    # Absolute-URI request line naming tenant b, Host header naming a: the Host header wins.
    reply = raw_request(
        edge.address,
        b"GET http://cdn.b.test/abs HTTP/1.1\r\nHost: cdn.a.test\r\nConnection: close\r\n\r\n",
    )
    assert body_for("a", "/abs", 64) in reply
    assert origin_b.total() == 0
    # X-Forwarded-Host is ignored.
    response = edge.get("evil.test", "/xfh", headers={"X-Forwarded-Host": "cdn.a.test"})
    assert response.status_code == 404
    # Duplicate Host headers are refused by nginx itself.
    reply = raw_request(
        edge.address,
        b"GET /dup HTTP/1.1\r\nHost: cdn.a.test\r\nHost: cdn.b.test\r\nConnection: close\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400")
    # HTTP/1.0 without Host: no tenant.
    reply = raw_request(edge.address, b"GET /nohost HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")
    # Odd Host values.
    for host in ("cdn.a.test@cdn.b.test", "cdn.b.test/..", "*.b.test"):
        reply = raw_request(
            edge.address,
            f"GET /odd HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert b"b:/odd" not in reply
    assert origin_b.total() == 0


def test_same_path_two_tenants_never_share_an_entry(two_tenants):
    edge, origin_a, origin_b = two_tenants
    assert edge.get("cdn.a.test", "/same").content == body_for("a", "/same", 1024)
    second = edge.get("cdn.b.test", "/same")
    assert second.content == body_for("b", "/same", 1024)
    assert second.headers["X-Cache-Status"] == "MISS"
    assert edge.get("cdn.a.test", "/same").headers["X-Cache-Status"] == "HIT"
    assert origin_a.count("/same") == origin_b.count("/same") == 1


def test_path_tricks_are_normalised_before_the_cache_key(two_tenants):
    edge, origin_a, _ = two_tenants
    assert edge.get("cdn.a.test", "/img/p.png").headers["X-Cache-Status"] == "MISS"
    for spelled in ("/img//p.png", "/x/../img/p.png", "/img/./p.png", "/x/%2e%2e/img/p.png"):
        response = edge.get("cdn.a.test", spelled)
        assert response.headers["X-Cache-Status"] == "HIT", spelled
    assert origin_a.count("/img/p.png") == 1


def test_paths_outside_the_safe_set_are_escaped_in_the_key_and_the_fetch(two_tenants):
    """nginx decodes %XX in the path: the key (and the origin request) escape it again, the
    same however the client spelled it."""
    edge, origin_a, _ = two_tenants
    assert edge.get("cdn.a.test", "/a%20b/%C3%A9.txt").headers["X-Cache-Status"] == "MISS"
    for spelled in ("/a%20b/%c3%a9.txt", "/a%20b/%C3%A9%2Etxt", "/x/../a%20b/%C3%A9.txt"):
        assert edge.get("cdn.a.test", spelled).headers["X-Cache-Status"] == "HIT", spelled
    assert origin_a.count("/a%20b/%C3%A9.txt") == 1
    assert edge.get("cdn.a.test", "/a-b/~e.txt").headers["X-Cache-Status"] == "MISS"
    assert origin_a.count("/a-b/~e.txt") == 1


def test_query_string_policies(edge, make_origin):
    origin = make_origin("q")
    bundle = make_bundle(
        tenant("all", ["all.test"], origin.address, query_mode="all"),
        tenant("ign", ["ign.test"], origin.address, query_mode="ignore"),
        tenant("keep", ["keep.test"], origin.address, query_mode="keep", query_keep=["v"]),
    )
    assert edge.apply(bundle).status_code == 200
    # all: sorted args; different order -> same entry; different values -> different entry.
    assert edge.get("all.test", "/p?b=2&a=1").headers["X-Cache-Status"] == "MISS"
    assert edge.get("all.test", "/p?a=1&b=2").headers["X-Cache-Status"] == "HIT"
    assert edge.get("all.test", "/p?a=1&b=3").headers["X-Cache-Status"] == "MISS"
    assert origin.count("/p?a=1&b=2") == 1
    # ignore: no query at all.
    assert edge.get("ign.test", "/i?x=1").headers["X-Cache-Status"] == "MISS"
    assert edge.get("ign.test", "/i?y=2").headers["X-Cache-Status"] == "HIT"
    assert origin.count("/i") == 1
    # keep: only listed args.
    assert edge.get("keep.test", "/k?v=1&utm=a").headers["X-Cache-Status"] == "MISS"
    assert edge.get("keep.test", "/k?utm=b&v=1").headers["X-Cache-Status"] == "HIT"
    assert edge.get("keep.test", "/k?v=2").headers["X-Cache-Status"] == "MISS"
    assert origin.count("/k?v=1") == 1
