"""Purge by URL, prefix, tag and everything; who may purge what."""

from __future__ import annotations

import re

import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant

pytestmark = pytest.mark.integration


@pytest.fixture
def cached(edge, make_origin):
    origin = make_origin("a")
    other = make_origin("b")
    bundle = make_bundle(
        tenant("a", ["a.test"], origin.address, purge_tokens=["token-a"]),
        tenant("b", ["b.test"], other.address, purge_tokens=["token-b"]),
    )
    assert edge.apply(bundle).status_code == 200
    origin.behave("/img/", surrogate_key="images t1")
    origin.behave("/css/", cache_tag="styles,t1")
    paths = ["/a", "/b?x=1", "/img/1.png", "/img/2.png", "/css/s.css", "/other"]
    for path in paths:
        assert edge.get("a.test", path).headers["X-Cache-Status"] == "MISS"
        assert edge.get("a.test", path).headers["X-Cache-Status"] == "HIT"
    assert edge.get("b.test", "/a").headers["X-Cache-Status"] == "MISS"
    return edge, paths


def statuses(edge, paths):
    return {p: edge.get("a.test", p).headers["X-Cache-Status"] for p in paths}


def test_purge_urls(cached):
    edge, paths = cached
    response = edge.purge({"tenant": "a", "urls": ["/a", "/b?x=1", "/never-cached"]})
    assert response.status_code == 200
    assert response.json() == {"tenant": "a", "kind": "urls", "purged": 2}
    after = statuses(edge, paths)
    assert after["/a"] == after["/b?x=1"] == "MISS"
    assert after["/img/1.png"] == after["/other"] == "HIT"
    assert edge.get("b.test", "/a").headers["X-Cache-Status"] == "HIT"


def test_purge_prefix(cached):
    edge, paths = cached
    response = edge.purge({"tenant": "a", "prefix": "/img/"})
    assert response.json() == {"tenant": "a", "kind": "prefix", "purged": 2}
    after = statuses(edge, paths)
    assert after["/img/1.png"] == after["/img/2.png"] == "MISS"
    assert after["/a"] == after["/css/s.css"] == "HIT"


def test_purge_tag(cached):
    edge, paths = cached
    response = edge.purge({"tenant": "a", "tag": "t1"})
    assert response.json() == {"tenant": "a", "kind": "tag", "purged": 3}
    after = statuses(edge, paths)
    assert after["/img/1.png"] == after["/img/2.png"] == after["/css/s.css"] == "MISS"
    assert after["/a"] == "HIT"
    assert edge.purge({"tenant": "a", "tag": "styles"}).json()["purged"] == 1


def test_purge_all(cached):
    edge, paths = cached
    response = edge.purge({"tenant": "a", "all": True})
    assert response.status_code == 200
    assert response.json() == {"tenant": "a", "kind": "all", "purged": len(paths)}
    assert set(statuses(edge, paths).values()) == {"MISS"}
    assert edge.get("b.test", "/a").headers["X-Cache-Status"] == "HIT"


def purge_counts(edge) -> dict[tuple[str, str], float]:
    """cdn_purges_total of the edge's /metrics, by (tenant, kind)."""
    counts = {}
    for line in edge.metrics().splitlines():
        match = re.fullmatch(r'cdn_purges_total\{tenant="([^"]*)",kind="([^"]*)"\} (\S+)', line)
        if match:
            counts[match[1], match[2]] = float(match[3])
    return counts


def test_purges_are_counted_per_tenant_and_kind_on_metrics(cached):
    edge, _ = cached
    assert "# TYPE cdn_purges_total counter" in edge.metrics()
    assert purge_counts(edge) == {}  # no series before a tenant purges
    for body in (
        {"urls": ["/a", "/never-cached"]},
        {"urls": ["/b?x=1"]},
        {"prefix": "/img/"},
        {"tag": "t1"},
        {"all": True},
    ):
        assert edge.purge({"tenant": "a", **body}).status_code == 200
    assert edge.purge({"tenant": "b", "urls": ["/a"]}, token="token-b").status_code == 200
    # Refused purges change nothing: bad body, wrong token, unknown tenant.
    assert edge.purge({"tenant": "a", "prefix": "img"}).status_code == 400
    assert edge.purge({"tenant": "a", "all": True}, token="nope").status_code == 401
    assert edge.purge({"tenant": "zzz", "all": True}).status_code == 404
    assert purge_counts(edge) == {
        ("a", "url"): 2,
        ("a", "prefix"): 1,
        ("a", "tag"): 1,
        ("a", "all"): 1,
        ("b", "url"): 1,
    }
    assert edge.purge({"tenant": "a", "tag": "styles"}).status_code == 200
    assert purge_counts(edge)["a", "tag"] == 2


def test_tenant_purge_token_is_limited_to_its_tenant(cached):
    edge, _ = cached
    own = edge.purge({"tenant": "a", "urls": ["/a"]}, token="token-a")
    assert own.status_code == 200
    assert edge.purge({"tenant": "b", "urls": ["/a"]}, token="token-a").status_code == 401
    assert edge.get("b.test", "/a").headers["X-Cache-Status"] == "HIT"
    assert edge.purge({"tenant": "a", "all": True}, token="nope").status_code == 401
    # A tenant token is not an admin token.
    response = edge.admin.get("/config", headers={"Authorization": "Bearer token-a"})
    assert response.status_code == 401


def test_purge_unknown_tenant_and_bad_body(cached):
    edge, _ = cached
    response = edge.purge({"tenant": "zzz", "all": True})
    assert response.status_code == 404
    assert edge.purge({"tenant": "a"}).status_code == 400
    assert edge.purge({"tenant": "a", "prefix": "img"}).status_code == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"all": True, "prefix": "/img/"}, "one kind per request"),
        ({"urls": ["/a"], "tag": "t1"}, "one kind per request"),
        ({"urls": []}, "non-empty list"),
        ({"urls": ["/a"] * 1001}, "more than the limit of 1000"),
        ({"urls": ["/" + "a" * 8192]}, "longer than the limit of 8192"),
        ({"prefix": "/" + "p" * 8192}, "longer than the limit of 8192"),
        ({"tag": "t" * 1025}, "longer than the limit of 1024"),
        ({"tag": "two tags"}, "without spaces or commas"),
        ({"all": False}, "all: must be true"),
    ],
)
def test_ambiguous_or_oversized_purges_are_refused_and_purge_nothing(cached, body, message):
    edge, paths = cached
    response = edge.purge({"tenant": "a", **body})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert set(statuses(edge, paths).values()) == {"HIT"}


def test_purge_all_survives_a_restart(make_node, make_origin):
    origin = make_origin("r")
    node = make_node("restart")
    assert node.apply(make_bundle(tenant("r", ["r.test"], origin.address))).status_code == 200
    assert node.get("r.test", "/kept").headers["X-Cache-Status"] == "MISS"
    assert node.get("r.test", "/gone").headers["X-Cache-Status"] == "MISS"
    assert node.purge({"tenant": "r", "all": True}).status_code == 200
    assert node.get("r.test", "/kept").headers["X-Cache-Status"] == "MISS"
    node.close()
    node = make_node("restart", listen=node.address, admin_listen=node.edge.settings.admin_listen)
    assert node.get("r.test", "/kept").headers["X-Cache-Status"] == "HIT"
    assert node.get("r.test", "/gone").headers["X-Cache-Status"] == "MISS"
    assert origin.count("/gone") == 2


def test_removing_a_tenant_purges_its_cache(edge, make_origin):
    origin = make_origin("gone")
    other = tenant("keep", ["keep.test"], origin.address)
    with_gone = make_bundle(tenant("gone", ["gone.test"], origin.address), other)
    assert edge.apply(with_gone).status_code == 200
    edge.get("gone.test", "/obj")
    assert edge.get("gone.test", "/obj").headers["X-Cache-Status"] == "HIT"
    assert edge.apply(make_bundle(other)).status_code == 200
    assert edge.get("gone.test", "/obj").status_code == 404
    assert edge.apply(with_gone).status_code == 200  # the tenant comes back: starts empty
    assert edge.get("gone.test", "/obj").headers["X-Cache-Status"] == "MISS"
    assert origin.count("/obj") == 2


def test_a_full_index_evicts_nothing_and_prefix_purges_then_purge_everything(
    make_node, make_origin
):
    """An index entry evicted to make room would be an object a prefix or tag purge cannot
    find, served after the purge: a full index keeps its entries and marks the tenant."""
    node = make_node(workers=1, purge_dict_size="64k")
    origin = make_origin("a")
    assert node.apply(make_bundle(tenant("a", ["a.test"], origin.address))).status_code == 200
    paths = [f"/f/{n}" for n in range(600)]  # far more entries than 64k holds
    for path in paths:
        assert node.get("a.test", path).headers["X-Cache-Status"] == "MISS"
    answer = node.purge({"tenant": "a", "prefix": "/f/"}).json()
    assert "purge index was full" in answer["note"]
    assert {node.get("a.test", p).headers["X-Cache-Status"] for p in paths[::50]} == {"MISS"}
    # The purge-all moved the tenant's generation: its index is whole again.
    node.get("a.test", "/g/1")
    assert node.purge({"tenant": "a", "prefix": "/g/"}).json() == {
        "tenant": "a",
        "kind": "prefix",
        "purged": 1,
    }
