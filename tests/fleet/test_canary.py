"""The canary's smoke check against a real edge: what counts as a tenant that did not reach
the node (the edge's own 404 for an unknown Host) and what is the origin's answer."""

from __future__ import annotations

import httpx
import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.fleet.canary import SMOKE_PREFIX, not_routed, smoke_path
from tests.edge.conftest import edge, make_node, make_origin

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
