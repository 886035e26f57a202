"""TTL decisions, stale serving, request collapsing, ranges, compression, origin fetch."""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import json
import re
import time

import httpx
import pydantic
import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.nginx_conf import NodeSettings, lua_settings
from cdnctl.lab.sample_origin import body_for

pytestmark = pytest.mark.integration


def status_of(response: httpx.Response) -> str:
    return response.headers["X-Cache-Status"]


@pytest.fixture
def site(edge, make_origin):
    """Tenant `t` (respect_origin) with rules, plus `d` (CDN-decided TTL)."""
    origin = make_origin("t")
    bundle = make_bundle(
        tenant(
            "t",
            ["t.test"],
            origin.address,
            default_ttl=120,
            rules=[
                {"path": "/api/*", "bypass": True},
                {"path": "*.jpg", "ttl": 600},
                {"path": "/cookie-ok/*", "cache_set_cookie": True},
            ],
        ),
        tenant("d", ["d.test"], origin.address, respect_origin=False, default_ttl=1),
    )
    assert edge.apply(bundle).status_code == 200
    return edge, origin


def twice(edge, host, path):
    return status_of(edge.get(host, path)), status_of(edge.get(host, path))


def test_origin_cache_control_is_respected(site):
    edge, origin = site
    origin.behave("/nostore", cache_control="no-store")
    origin.behave("/private", cache_control="private, max-age=600")
    origin.behave("/nocache", cache_control="no-cache")
    origin.behave("/smax", cache_control="max-age=0, s-maxage=600")
    origin.behave("/expires", cache_control=None, expires="Thu, 01 Jan 2099 00:00:00 GMT")
    origin.behave("/expired", cache_control=None, expires="Thu, 01 Jan 1998 00:00:00 GMT")
    origin.behave("/none", cache_control=None)
    assert twice(edge, "t.test", "/nostore") == ("MISS", "MISS")
    assert twice(edge, "t.test", "/private") == ("MISS", "MISS")
    assert twice(edge, "t.test", "/nocache") == ("MISS", "MISS")
    assert twice(edge, "t.test", "/smax") == ("MISS", "HIT")
    assert twice(edge, "t.test", "/expires") == ("MISS", "HIT")
    assert twice(edge, "t.test", "/expired") == ("MISS", "MISS")
    assert twice(edge, "t.test", "/none") == ("MISS", "HIT")  # default_ttl
    # The client sees the origin's own Cache-Control, not the internal one.
    response = edge.get("t.test", "/smax")
    assert response.headers["Cache-Control"] == "max-age=0, s-maxage=600"
    assert not [h for h in response.headers if h.lower().startswith("x-cdnctl")]
    assert int(response.headers["Age"]) >= 0


def test_short_max_age_expires(site):
    edge, origin = site
    origin.behave("/short", cache_control="max-age=1")
    assert twice(edge, "t.test", "/short") == ("MISS", "HIT")
    time.sleep(2.1)
    assert status_of(edge.get("t.test", "/short")) in {"EXPIRED", "MISS"}
    assert origin.count("/short") == 2


def test_rules_override_and_bypass(site):
    edge, origin = site
    origin.behave("/", cache_control="no-store")
    assert twice(edge, "t.test", "/img/a.jpg") == ("MISS", "HIT")  # rule ttl beats no-store
    origin.behave("/api/", cache_control="max-age=600")
    assert twice(edge, "t.test", "/api/v1") == ("BYPASS", "BYPASS")
    assert origin.count("/api/v1") == 2


def test_set_cookie_responses_not_cached_unless_rule_allows(site):
    edge, origin = site
    origin.behave("/c", cache_control="max-age=600", set_cookie="s=1")
    origin.behave("/cookie-ok/", cache_control="max-age=600", set_cookie="s=1")
    assert twice(edge, "t.test", "/c") == ("MISS", "MISS")
    assert twice(edge, "t.test", "/cookie-ok/x") == ("MISS", "HIT")


def test_cdn_decided_ttl_ignores_origin(site):
    edge, origin = site
    origin.behave("/", cache_control="no-store")
    assert twice(edge, "d.test", "/x") == ("MISS", "HIT")
    time.sleep(2.1)
    assert status_of(edge.get("d.test", "/x")) in {"EXPIRED", "MISS"}


def test_only_get_and_head_are_cached(edge, make_origin):
    origin = make_origin("m")
    bundle = make_bundle(tenant("m", ["m.test"], origin.address, methods=["GET", "HEAD", "POST"]))
    assert edge.apply(bundle).status_code == 200
    first = edge.request("POST", "m.test", "/p", content=b"x")
    second = edge.request("POST", "m.test", "/p", content=b"x")
    assert first.status_code == second.status_code == 200
    assert status_of(first) == status_of(second) == "BYPASS"
    assert origin.count("/p") == 2
    assert status_of(edge.request("HEAD", "m.test", "/h")) == "MISS"
    assert status_of(edge.get("m.test", "/h")) == "HIT"


def test_stale_if_error_when_origin_dies(edge, make_origin):
    origin = make_origin("s")
    bundle = make_bundle(tenant("s", ["s.test"], origin.address, stale_if_error=3600))
    assert edge.apply(bundle).status_code == 200
    origin.behave("/", cache_control="max-age=1")
    assert edge.get("s.test", "/obj").status_code == 200
    origin.behave("/", cache_control="max-age=1", status=503)
    time.sleep(2.1)
    response = edge.get("s.test", "/obj")
    assert response.status_code == 200
    assert status_of(response) == "STALE"
    assert response.content == body_for("s", "/obj", 1024)
    origin.stop()
    response = edge.get("s.test", "/obj")
    assert (response.status_code, status_of(response)) == (200, "STALE")


def test_stale_while_revalidate_serves_updating(edge, make_origin):
    origin = make_origin("w")
    bundle = make_bundle(tenant("w", ["w.test"], origin.address, stale_while_revalidate=60))
    assert edge.apply(bundle).status_code == 200
    origin.behave("/", cache_control="max-age=1", delay=0.5)
    assert status_of(edge.get("w.test", "/r")) == "MISS"
    time.sleep(2.1)
    started = time.monotonic()
    response = edge.get("w.test", "/r")
    assert status_of(response) in {"UPDATING", "STALE"}
    assert time.monotonic() - started < 0.4  # served without waiting for the origin
    time.sleep(1.0)
    assert origin.count("/r") == 2  # the background update reached the origin


def test_concurrent_misses_collapse_to_one_origin_fetch(edge, make_origin):
    origin = make_origin("l")
    assert edge.apply(make_bundle(tenant("l", ["l.test"], origin.address))).status_code == 200
    origin.behave("/", delay=0.5)

    def fetch(_: int) -> int:
        with httpx.Client(base_url=edge.edge.base_url, timeout=10) as client:
            return client.get("/big", headers={"Host": "l.test"}).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(fetch, range(10)))
    assert statuses == [200] * 10
    assert origin.count("/big") == 1


def test_range_requests_use_slices(edge, make_origin):
    origin = make_origin("r")
    assert edge.apply(make_bundle(tenant("r", ["r.test"], origin.address))).status_code == 200
    size = 3 * 1024 * 1024 + 17
    origin.behave("/big", size=size)
    whole = body_for("r", "/big", size)
    response = edge.get("r.test", "/big", headers={"Range": "bytes=1048570-1048590"})
    assert response.status_code == 206
    assert response.content == whole[1048570:1048591]
    assert response.headers["Content-Range"] == f"bytes 1048570-1048590/{size}"
    response = edge.get("r.test", "/big", headers={"Range": "bytes=-10"})
    assert response.status_code == 206 and response.content == whole[-10:]
    # Slices fetched once each: origin saw ranged requests only.
    ranged = [r for r in origin.seen if r.path == "/big"]
    assert all(r.headers.get("Range", "").startswith("bytes=") for r in ranged)
    again = edge.get("r.test", "/big", headers={"Range": "bytes=1048570-1048590"})
    assert status_of(again) == "HIT"


def test_text_is_compressed_gzip_and_brotli(edge, make_origin):
    origin = make_origin("z")
    assert edge.apply(make_bundle(tenant("z", ["z.test"], origin.address))).status_code == 200
    origin.behave("/t", content_type="text/css", size=4096)
    response = edge.get("z.test", "/t.css", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.content == body_for("z", "/t.css", 4096)  # httpx decodes
    raw = httpx.get(
        f"{edge.edge.base_url}/t.css", headers={"Host": "z.test", "Accept-Encoding": "br"}
    )
    assert raw.headers.get("Content-Encoding") == "br"
    plain = edge.get("z.test", "/t.css", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert gzip.compress(b"x")  # gzip module is what httpx used above


def test_origin_fetch_uses_basic_auth_host_header_and_base_path(edge, make_origin):
    origin = make_origin("o", basic_auth=("cdn", "s3cret"))
    bundle = make_bundle(
        tenant(
            "o",
            ["o.test"],
            origin.address,
            basic_auth=("cdn", "s3cret"),
            base_path="/static",
            host_header="www.o.example",
        )
    )
    assert edge.apply(bundle).status_code == 200
    response = edge.get(
        "o.test", "/a.txt", headers={"Authorization": "Basic Y2xpZW50OnB3", "X-Request-ID": "rq-1"}
    )
    assert response.status_code == 200
    assert response.content == body_for("o", "/static/a.txt", 1024)
    seen = origin.seen[-1]
    expected = "Basic " + base64.b64encode(b"cdn:s3cret").decode()
    assert seen.headers["Authorization"] == expected
    assert seen.headers["Host"] == "www.o.example"
    assert seen.headers["X-Request-ID"] == "rq-1"
    assert not [h for h in seen.headers if h.lower().startswith("x-cdnctl")]
    assert response.headers["X-Request-ID"] == "rq-1"
    # Generated: 128 random bits in hex, never twice (the edge runs two workers); a
    # malformed client id is replaced.
    ids = {edge.get("o.test", f"/id-{n}").headers["X-Request-ID"] for n in range(40)}
    for malformed in ("a b", "x" * 129):
        response = edge.get("o.test", "/b.txt", headers={"X-Request-ID": malformed})
        ids.add(response.headers["X-Request-ID"])
    assert len(ids) == 42 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_wrong_origin_credentials_are_not_cached(edge, make_origin):
    origin = make_origin("p", basic_auth=("cdn", "right"))
    bundle = make_bundle(tenant("p", ["p.test"], origin.address, basic_auth=("cdn", "wrong")))
    assert edge.apply(bundle).status_code == 200
    assert edge.get("p.test", "/x").status_code == 401


def test_stale_is_bounded_by_the_tenant_window(edge, make_origin):
    origin = make_origin("b")
    bundle = make_bundle(tenant("b", ["b.test"], origin.address, stale_if_error=1))
    assert edge.apply(bundle).status_code == 200
    origin.behave("/", cache_control="max-age=1")
    assert edge.get("b.test", "/obj").status_code == 200
    time.sleep(3.1)  # past max-age (1 s) + stale-if-error (1 s)
    origin.stop()
    # A stale copy the cache may not serve and cannot revalidate: 504 (RFC 9111 §5.2.2.2).
    assert edge.get("b.test", "/obj").status_code == 504


def test_json_access_log_line(edge, make_origin):
    origin = make_origin("j")
    assert edge.apply(make_bundle(tenant("j", ["j.test"], origin.address))).status_code == 200
    edge.get("j.test", "/logged", headers={"X-Request-ID": "req-42"})
    lines = edge.edge.access_log.read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["tenant"] == "j"
    assert entry["request_id"] == "req-42"
    assert entry["cache_status"] == "MISS"
    assert entry["upstream_addr"].startswith("unix:")
    assert float(entry["upstream_time"]) >= 0
    assert entry["status"] == 200


def test_cache_inactive_must_be_an_nginx_time(tmp_path):
    for value in ("7d", "1h30m", "90"):
        settings = NodeSettings(prefix=tmp_path, admin_token="x" * 16, cache_inactive=value)
        assert lua_settings(settings)["cache_inactive"] == value
    with pytest.raises(pydantic.ValidationError, match="'7x' is not an nginx time"):
        NodeSettings(prefix=tmp_path, admin_token="x" * 16, cache_inactive="7x")
