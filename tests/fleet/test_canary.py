"""The canary's smoke check against a real edge: what counts as a tenant that did not reach
the node (the edge's own 404 for an unknown Host) and what is the origin's answer."""

from __future__ import annotations

import itertools

import httpx
import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.admin_client import AdminClient, Edge
from cdnctl.fleet.canary import (
    SMOKE_MOST,
    SMOKE_PREFIX,
    check_canary,
    not_routed,
    smoke_path,
    smoke_sample,
)
from tests.edge.conftest import ADMIN_TOKEN, edge, make_node, make_origin

__all__ = ["edge", "make_node", "make_origin"]
pytestmark = pytest.mark.integration


def test_the_edges_unknown_host_404_is_not_routed(edge, make_origin) -> None:
    origin = make_origin("a")
    origin.behave(SMOKE_PREFIX, status=404, content_type="application/json")
    assert edge.apply(make_bundle(tenant("a", ["cdn.a.test"], origin.address))).status_code == 200
    unknown = edge.get("cdn.new.test", smoke_path())
    assert unknown.status_code == 404 and not_routed(unknown)
    # The tenant's own origin answering 404 (even as JSON) is the tenant being served.
    served = edge.get("cdn.a.test", smoke_path())
    assert served.status_code == 404 and not not_routed(served)
    assert not not_routed(httpx.Response(404, json=["unknown host"]))
    assert not not_routed(httpx.Response(200, json={"error": "unknown host"}))


def test_every_smoke_request_reaches_the_origin(edge, make_origin) -> None:
    origin = make_origin("a")
    assert edge.apply(make_bundle(tenant("a", ["cdn.a.test"], origin.address))).status_code == 200
    paths = [smoke_path() for _ in range(3)]
    assert len(set(paths)) == 3 and all(p.startswith(SMOKE_PREFIX) for p in paths)
    for path in paths:
        assert edge.get("cdn.a.test", path).headers.get("X-Cache-Status") == "MISS"
    assert sum(origin.count(p) for p in paths) == 3


def test_a_commit_changing_many_tenants_smoke_tests_a_spread_sample() -> None:
    few = {f"t{i:03d}": [f"cdn.t{i:03d}.test"] for i in range(SMOKE_MOST)}
    assert smoke_sample(few) == few
    many = {f"t{i:03d}": [f"cdn.t{i:03d}.test"] for i in range(120)}
    sample = smoke_sample(many)
    assert len(sample) == SMOKE_MOST and sample == smoke_sample(dict(reversed(many.items())))
    ids = sorted(many)
    positions = [ids.index(tenant) for tenant in sample]
    assert positions[0] == 0 and positions == sorted(set(positions))
    assert max(b - a for a, b in itertools.pairwise(positions)) <= -(-120 // SMOKE_MOST)
    assert all(sample[tenant] == many[tenant] for tenant in sample)


def test_a_first_sync_of_many_tenants_sends_the_origins_only_the_sample(edge, make_origin) -> None:
    origin = make_origin("a")
    tenants = [tenant(f"t{i:03d}", [f"cdn.t{i:03d}.test"], origin.address) for i in range(120)]
    assert edge.apply(make_bundle(*tenants)).status_code == 200
    changed = {t["id"]: t["domains"] for t in tenants}
    with AdminClient(Edge("edge", edge.edge.admin_url), ADMIN_TOKEN) as client:
        verdict = check_canary(
            client, edge.edge.base_url, changed, window=0.1, max_error_ratio=0.05
        )
    assert verdict.ok, verdict
    smoked = sum(n for path, n in origin.counts.items() if path.startswith(SMOKE_PREFIX))
    assert smoked == SMOKE_MOST
