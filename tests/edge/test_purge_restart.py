"""The purge index (prefix and tag purges) outlives a restart; after one that did not save
it, a prefix or tag purge purges the tenant's whole cache rather than miss an object."""

from __future__ import annotations

import os
import signal

import pytest

from cdnctl.bundle.synthetic import make_bundle, tenant

pytestmark = pytest.mark.integration

PATHS = ["/img/1.png", "/img/2.png", "/other"]


def cache_status(node, path: str) -> str:
    return node.get("a.test", path).headers["X-Cache-Status"]


@pytest.fixture
def warm(make_node, make_origin):
    origin = make_origin("a")
    origin.behave("/img/", surrogate_key="images")
    node = make_node("restart")
    assert node.apply(make_bundle(tenant("a", ["a.test"], origin.address))).status_code == 200
    for path in PATHS:
        cache_status(node, path)
        assert cache_status(node, path) == "HIT"
    return node


def restarted(make_node, node):
    return make_node("restart", listen=node.address, admin_listen=node.edge.settings.admin_listen)


def test_the_index_survives_a_graceful_restart(make_node, warm):
    warm.close()  # SIGQUIT: worker 0 saves the index as it exits
    node = restarted(make_node, warm)
    assert [cache_status(node, p) for p in PATHS] == ["HIT", "HIT", "HIT"]
    assert node.purge({"tenant": "a", "tag": "images"}).json() == {
        "tenant": "a",
        "kind": "tag",
        "purged": 2,
    }
    assert [cache_status(node, p) for p in PATHS] == ["MISS", "MISS", "HIT"]


def test_after_a_crash_a_tag_purge_purges_the_whole_tenant(make_node, warm):
    os.killpg(warm.edge.process.pid, signal.SIGKILL)  # no final save of the index
    warm.edge.process.wait(10)
    warm.close()
    node = restarted(make_node, warm)
    assert cache_status(node, "/other") == "HIT"
    answer = node.purge({"tenant": "a", "tag": "images"}).json()
    assert "unclean restart" in answer["note"]
    assert [cache_status(node, p) for p in PATHS] == ["MISS", "MISS", "MISS"]
    # The purge-all made the index whole again: the next tag purge uses it.
    assert [cache_status(node, p) for p in PATHS] == ["HIT", "HIT", "HIT"]
    assert node.purge({"tenant": "a", "tag": "images"}).json()["purged"] == 2
    assert [cache_status(node, p) for p in PATHS] == ["MISS", "MISS", "HIT"]
