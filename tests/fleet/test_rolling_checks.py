"""The pure parts of cdnctl.fleet.rolling: batches, the host names a verify requests, the
DNS view of an edge (the lab's tests/lab/test_rolling.py runs the whole roll)."""

from __future__ import annotations

from cdnctl.fleet import rolling


def test_batches_keep_the_inventory_order() -> None:
    names = ["eu-edge-1", "eu-edge-2", "eu-edge-3"]
    assert rolling.batches_of(names, 1) == [["eu-edge-1"], ["eu-edge-2"], ["eu-edge-3"]]
    assert rolling.batches_of(names, 2) == [["eu-edge-1", "eu-edge-2"], ["eu-edge-3"]]


def test_every_tenant_gets_a_host_that_routes_to_it() -> None:
    manifest = {
        "hosts": {"b.example.test": "b", "a.example.test": "a", "www.a.example.test": "a"},
        "wildcards": {"c.example.test": "c", "a.example.test": "a"},
        "tenants": {"a": "sha256:1", "b": "sha256:2", "c": "sha256:3", "d": "sha256:4"},
    }
    assert rolling.tenant_hosts(manifest) == {
        "a": "a.example.test",  # an exact domain before a wildcard
        "b": "b.example.test",
        "c": "smoke.c.example.test",  # the label ansible/tenants.yml's smoke test uses
        "d": "",  # no domain: verify reports it
    }


def test_an_edge_unknown_to_a_dns_host_is_not_up() -> None:
    views = {
        "eu-dns-1": {"10.0.0.1/edge_health": {"state": "UP", "real_state": "UP"}},
        "us-dns-1": {},
    }
    assert rolling.edge_state(views, "10.0.0.1") == {"eu-dns-1": "UP", "us-dns-1": "-"}
