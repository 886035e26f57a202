"""Shield tier: edges send misses to the region's shields; origin directly when none answers."""

from __future__ import annotations

import time

import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.runner import free_port
from cdnctl.lab.sample_origin import body_for

pytestmark = pytest.mark.integration


def test_two_edges_one_shield_one_origin_fetch(make_node, make_origin):
    origin = make_origin("s", basic_auth=("cdn", "pw"))
    bundle = make_bundle(
        tenant("s", ["s.test"], origin.address, shield=True, basic_auth=("cdn", "pw")),
        tenant("n", ["n.test"], origin.address, shield=False, basic_auth=("cdn", "pw")),
    )
    shield = make_node("shield", mode="shield", workers=1)
    edges = [make_node(f"edge{i}", shields=[shield.address], workers=1) for i in range(2)]
    for node in (shield, *edges):
        assert node.apply(bundle).status_code == 200
    for node in edges:
        response = node.get("s.test", "/shared")
        assert response.status_code == 200
        assert response.content == body_for("s", "/shared", 1024)
        assert response.headers["X-Cache-Status"] == "MISS"
    assert origin.count("/shared") == 1
    time.sleep(1.2)  # metrics are flushed to the shared dict every second
    assert shield.metrics().count('tenant="s"') > 0
    # shield: false tenants go to the origin directly, bypassing the shield.
    for node in edges:
        node.get("n.test", "/direct")
    assert origin.count("/direct") == 2
    assert 'tenant="n"' not in shield.metrics()


def test_edge_falls_back_to_origin_when_no_shield_answers(make_node, make_origin):
    origin = make_origin("f")
    bundle = make_bundle(tenant("f", ["f.test"], origin.address, shield=True))
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    edge = make_node("edge", shields=dead, workers=1)
    assert edge.apply(bundle).status_code == 200
    response = edge.get("f.test", "/fb")
    assert response.status_code == 200
    assert response.content == body_for("f", "/fb", 1024)
    assert edge.get("f.test", "/fb").headers["X-Cache-Status"] == "HIT"
    assert origin.count("/fb") == 1


def test_shield_choice_is_consistent_across_edges(make_node, make_origin):
    origin = make_origin("c")
    bundle = make_bundle(tenant("c", ["c.test"], origin.address, shield=True))
    shields = [make_node(f"shield{i}", mode="shield", workers=1) for i in range(2)]
    addresses = [s.address for s in shields]
    edges = [
        make_node(f"edge{i}", shields=list(reversed(addresses)) if i else addresses, workers=1)
        for i in range(2)
    ]
    for node in (*shields, *edges):
        assert node.apply(bundle).status_code == 200
    paths = [f"/k{i}" for i in range(12)]
    for node in edges:
        for path in paths:
            assert node.get("c.test", path).status_code == 200
    assert all(origin.count(p) == 1 for p in paths)
    time.sleep(1.2)
    used = [s.metrics().count('cache_status="MISS"') for s in shields]
    assert all(count > 0 for count in used)  # keys are spread over both shields
