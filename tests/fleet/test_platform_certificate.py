"""The platform wildcard certificate: DNS-01 through the platform's own gdnsd, by pebble.

A real edge, a real gdnsd serving the platform zone the project renders (cdn.test), and a
real pebble that resolves through that gdnsd: `converge` puts the DNS-01 payload on the DNS
host with `gdnsdctl acme-dns-01` (through Ansible, as on a fleet), pebble looks the TXT record
up there, and the edge then serves `*.cdn.test` for every platform name, without a reload.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.admin_client import Edge
from cdnctl.edge.runner import free_port
from cdnctl.fleet.certificates import (
    PLATFORM,
    AcmeSettings,
    converge,
    platform_from_inventory,
    platform_wanted,
    status,
)
from tests.edge import conftest as edge_fixtures
from tests.edge.conftest import ADMIN_TOKEN, Node
from tests.fleet import pebble as pebble_fixtures
from tests.fleet.conftest import Gdnsd, query
from tests.fleet.pebble import Pebble, verified_leaf

make_node = edge_fixtures.make_node
make_pebble = pebble_fixtures.make_pebble

DOMAIN = "cdn.test"


@pytest.fixture
def gdnsd() -> Iterator[Gdnsd]:
    server = Gdnsd("platform-cert")
    yield server
    server.stop()


def inventory_for(base: Path, edge: Node, server: Gdnsd) -> Path:
    """One region: the edge, and one DNS host driven locally (Ansible's local connection)."""
    inventory = base / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    settings = {"domain": DOMAIN, "regions": {"eu": {"nets": ["192.0.2.0/24"]}}}
    (inventory / "group_vars" / "all" / "dns.yml").write_text(yaml.safe_dump({"cdn_dns": settings}))
    address = edge.address.rpartition(":")[0]
    hosts = {
        "edge": {"eu-edge-1": {"cdn_region": "eu", "cdn_public_address": address}},
        "dns": {
            "eu-dns-1": server.host_vars(),
        },
    }
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}})
    )
    return inventory


@pytest.mark.integration
def test_the_platform_wildcard_is_issued_by_dns01_and_served_for_platform_names(
    make_node: Callable[..., Node],
    make_pebble: Callable[..., Pebble],
    gdnsd: Gdnsd,
    tmp_path: Path,
) -> None:
    edge = make_node("eu", https_listen=f"127.0.0.1:{free_port()}")
    inventory = inventory_for(tmp_path, edge, gdnsd)
    gdnsd.configure_as_role(inventory)
    assert gdnsd.checkconf().returncode == 0
    gdnsd.start()

    pebble = make_pebble(free_port(), dns_server=f"127.0.0.1:{gdnsd.port}")
    acme = AcmeSettings(
        directory_url=pebble.directory_url,
        ca_bundle=pebble.listener_ca,
        contact=["mailto:ops@cdn.test"],
        state_dir=tmp_path / "controller",
        platform_wildcard=True,
    )
    wanted, publish = platform_from_inventory(inventory)
    assert (wanted.tenant, wanted.names, wanted.challenge) == (PLATFORM, ("*.cdn.test",), "dns-01")
    edges = [Edge(name=edge.address, url=edge.edge.admin_url)]
    master = edge.edge.master_pid

    report = converge([wanted], acme, edges, ADMIN_TOKEN, publish_dns=publish)
    assert report.ok, report
    assert report.issued == [PLATFORM]
    # The payload pebble checked is the one gdnsd serves (for its acme_challenge_ttl).
    assert len(query(gdnsd.port, f"_acme-challenge.{DOMAIN}", rtype="TXT")) == 1
    root = pebble.issuing_root()
    for name in ("edge.cdn.test", "customer-a.cdn.test", "edge-eu.cdn.test"):
        cert = verified_leaf(edge, name, root)  # verification includes the name
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert san.value.get_values_for_type(x509.DNSName) == ["*.cdn.test"]
    assert edge.edge.master_pid == master
    # A name outside the platform domain still gets the default certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        verified_leaf(edge, "shop.test", root)

    assert [(r.tenant, r.decision.action) for r in status([wanted], acme)] == [(PLATFORM, "keep")]

    # The second run, as an operator runs it: `cdnctl certs renew` with the inventory's
    # cdn_acme (platform_wildcard on) and no tenants: nothing issued, nothing sent.
    (inventory / "group_vars" / "all" / "certificates.yml").write_text(
        yaml.safe_dump({"cdn_acme": json.loads(acme.model_dump_json())})
    )
    tenants = tmp_path / "repo" / "tenants"
    tenants.mkdir(parents=True)
    result = CliRunner().invoke(
        app,
        [
            *("certs", "renew", "--inventory", str(inventory), "--tenants", str(tenants)),
            *("--edge", edge.edge.admin_url, "--format", "json"),
        ],
        env={"CDNCTL_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["issued"] == [] and again["ok"]
    assert [(t["tenant"], t["action"]) for t in again["tenants"]] == [(PLATFORM, "keep")]
    assert [(e["set"], e["removed"]) for e in again["edges"]] == [([], [])]


def test_dns01_without_dns_hosts_fails_the_order_and_names_why(tmp_path: Path) -> None:
    acme = AcmeSettings(directory_url="https://127.0.0.1:1/dir", state_dir=tmp_path / "c")
    report = converge([platform_wanted(DOMAIN)], acme, [], ADMIN_TOKEN)
    assert not report.ok
    assert "DNS-01 needs the DNS hosts" in (report.tenants[0].error or "")
