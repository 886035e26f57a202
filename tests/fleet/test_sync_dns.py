"""`cdnctl sync` with a real gdnsd as the inventory's DNS host: zones follow the commits,
on the edges first when a tenant is added, off DNS first when it is removed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from cdnctl.bundle.compile import check_tenants
from cdnctl.edge.runner import free_port
from cdnctl.fleet import dns
from cdnctl.tenants.policy import load_policy
from tests.edge.conftest import make_node, make_origin
from tests.fleet.conftest import make_gdnsd, query
from tests.fleet.test_sync import Repo, started_syncer

__all__ = ["make_gdnsd", "make_node", "make_origin"]
pytestmark = pytest.mark.integration
EDGES = {"eu-edge-1": ("eu", "127.0.0.31"), "us-edge-1": ("us", "127.0.0.32")}
SETTINGS = {
    "domain": "cdn.test",
    "edge_ttl": 5,
    "tenant_ttl": 30,
    "regions": {"eu": {"nets": ["192.0.2.0/24"]}, "us": {"nets": ["198.51.100.0/24"]}},
    "health": {"interval": 2, "timeout": 1, "up_thresh": 2, "ok_thresh": 1, "down_thresh": 1},
    "serve_tenant_domains": True,
}


@pytest.fixture
def lab(tmp_path: Path, make_node, make_origin, make_gdnsd, capsys):
    admin_port = free_port("127.0.0.31")  # gdnsd checks one admin port on every edge
    nodes = {
        name: make_node(
            name,
            listen=f"{address}:{free_port(address)}",
            admin_listen=f"{address}:{admin_port}",
        )
        for name, (_, address) in EDGES.items()
    }
    origin = make_origin("site")
    server = make_gdnsd("sync-dns")
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_private_origins: true\n"
    )
    (inventory / "group_vars" / "all" / "dns.yml").write_text(yaml.safe_dump({"cdn_dns": SETTINGS}))
    edges = {}
    for name, (region, address) in EDGES.items():
        port = int(nodes[name].edge.settings.listen.rpartition(":")[2])
        edges[name] = {
            "cdn_region": region,
            "cdn_public_address": address,
            "cdn_public_http_port": port,
            "cdn_private_address": address,
            "cdn_admin_api_port": admin_port,
        }
    hosts = {
        "edge": {"hosts": edges},
        "dns": {"hosts": {"eu-dns-1": server.host_vars()}},
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": hosts}}))
    settings, fleet = server.configure_as_role(inventory)  # as the geodns role leaves it
    server.start()
    repo = Repo(tmp_path)
    repo.write("site", origin.address)
    repo.commit("site")
    syncer = started_syncer(repo, inventory, tmp_path / "sync")
    capsys.readouterr()
    return {
        "repo": repo,
        "nodes": nodes,
        "syncer": syncer,
        "server": server,
        "origin": origin,
        "inventory": inventory,
        "settings": settings,
        "fleet": fleet,
    }


def phases(capsys) -> list[str]:
    """The phases of the last `sync_applied` log line, in the order they ran."""
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    applied = next(r for r in reversed(lines) if r["event"] == "sync_applied")
    with capsys.disabled():
        print(f"\nphases (s): {applied['phases']}")
    return [name for name, _ in applied["phases"]]


def installed(lab) -> str:
    return os.readlink(lab["server"].config_dir / "zones")


def test_zones_follow_commits_in_the_safe_order(lab, capsys):
    repo, syncer, port = lab["repo"], lab["syncer"], lab["server"].port
    assert query(port, "site.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    assert query(port, "shop.cdn.test", rtype="CNAME") == []

    repo.write("shop", lab["origin"].address)
    repo.commit("onboard shop")
    assert syncer.cycle().outcome == "applied"
    order = phases(capsys)
    assert "dns_remove" not in order and order.index("apply") < order.index("dns_add")
    assert query(port, "shop.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    assert query(port, "cdn.shop.test", "192.0.2.0/24") == ["127.0.0.31"]
    assert {n.get("cdn.shop.test", "/").status_code for n in lab["nodes"].values()} == {200}

    # the same files `cdnctl dns render` (the geodns role) would install: nothing to change
    checked = check_tenants([repo.work / "tenants"], load_policy(lab["inventory"]))
    zones = dns.render_zones(lab["settings"], lab["fleet"], dns.tenant_names(checked.results))
    assert installed(lab) == f"zones.d/{dns.zones_digest(zones)}"
    zone_dir = lab["server"].config_dir / "zones.d" / dns.zones_digest(zones)
    assert {p.name: p.read_text() for p in zone_dir.iterdir()} == zones

    repo.remove("shop")
    repo.commit("remove shop")
    assert syncer.cycle().outcome == "applied"
    order = phases(capsys)
    assert order.index("dns_remove") < order.index("canary") and "dns_add" not in order
    assert query(port, "shop.cdn.test", rtype="CNAME") == []
    assert query(port, "site.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    assert syncer.cycle().outcome == "unchanged"


def test_a_dns_host_that_was_away_gets_the_zones_it_missed(lab):
    repo, syncer, port = lab["repo"], lab["syncer"], lab["server"].port
    hosts_file = lab["inventory"] / "hosts.yml"
    reachable = hosts_file.read_text()
    away = yaml.safe_load(reachable)
    away["all"]["children"]["dns"]["hosts"]["eu-dns-1"].update(
        ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=free_port()
    )
    hosts_file.write_text(yaml.safe_dump(away))  # Ansible cannot reach it: nothing listens

    repo.write("shop", lab["origin"].address)
    commit = repo.commit("onboard shop while the DNS host is away")
    result = syncer.cycle()
    assert (result.outcome, result.commit) == ("applied", commit), result  # not blocked
    assert {n.get("cdn.shop.test", "/").status_code for n in lab["nodes"].values()} == {200}
    assert query(port, "shop.cdn.test", rtype="CNAME") == []  # it missed the zone set

    hosts_file.write_text(reachable)  # back
    result = syncer.cycle()
    assert result.outcome == "caught_up", result
    assert result.edges == {"eu-dns-1": "zones: installed"}
    assert query(port, "shop.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    assert syncer.cycle().outcome == "unchanged"
