"""gdnsd config and zones rendered from settings, fleet and tenants: golden files, serials,
tenant-domain zones, and the errors that name what to fix.

Regenerate the golden files after an intended change: CDNCTL_UPDATE_GOLDEN=1 pytest this.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from cdnctl.fleet import dns
from tests.fleet.conftest import GDNSD

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = dns.parse_settings(
    {
        "domain": "cdn.test",
        "regions": {
            "eu": {"nets": ["192.0.2.0/24", "10.1.0.0/16"], "failover": ["us"]},
            "us": {"nets": ["198.51.100.0/24"]},
            "ap": {"nets": ["203.0.113.0/24"], "failover": ["us", "eu"]},
        },
        "serve_tenant_domains": True,
    }
)
FLEET = dns.Fleet(
    edges=(
        dns.Host("ap-edge-1", "ap", "203.0.113.10"),
        dns.Host("eu-edge-1", "eu", "192.0.2.10"),
        dns.Host("eu-edge-2", "eu", "192.0.2.11"),
        dns.Host("us-edge-1", "us", "198.51.100.10"),
    ),
    dns=(dns.Host("eu-dns-1", "eu", "192.0.2.53"), dns.Host("us-dns-1", "us", "2001:db8::53")),
)
TENANTS = [
    dns.TenantNames("customer-a", ("cdn.customer-a.test",)),
    dns.TenantNames("customer-c", ("*.cdn.customer-c.test", "cdn.customer-c.test")),
    dns.TenantNames("nested", ("static.cdn.customer-a.test",)),
]
SERVER = dns.ServerOptions(listen=("any",), run_dir="/run/gdnsd", state_dir="/var/lib/gdnsd")


def rendered() -> dict[str, str]:
    zones = dns.render_zones(SETTINGS, FLEET, TENANTS)
    return {"config": dns.render_config(SETTINGS, FLEET, SERVER)} | {
        f"zones/{name}": text for name, text in zones.items()
    }


def test_rendering_matches_the_golden_files() -> None:
    files = rendered()
    if os.environ.get("CDNCTL_UPDATE_GOLDEN"):
        for name, text in files.items():
            (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(text)
    on_disk = {
        str(path.relative_to(GOLDEN)): path.read_text()
        for path in GOLDEN.rglob("*")
        if path.is_file()
    }
    assert files == on_disk


def test_gdnsd_accepts_the_golden_tree(tmp_path: Path) -> None:
    dns.write_tree(tmp_path, rendered()["config"], dns.render_zones(SETTINGS, FLEET, TENANTS))
    checked = subprocess.run(
        [GDNSD, "-c", str(tmp_path), "checkconf"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def serial(zone: str) -> int:
    return int(re.search(r"SOA \S+ \S+ \( (\d+) ", zone).group(1))


def test_serials_are_deterministic_and_follow_the_content() -> None:
    first = dns.platform_zone(SETTINGS, FLEET, TENANTS)
    assert dns.platform_zone(SETTINGS, FLEET, list(TENANTS)) == first
    more = dns.platform_zone(SETTINGS, FLEET, [*TENANTS, dns.TenantNames("d", ("d.test",))])
    assert serial(more) != serial(first)
    other_ttl = SETTINGS.model_copy(update={"tenant_ttl": 301})
    assert serial(dns.platform_zone(other_ttl, FLEET, TENANTS)) != serial(first)


def test_region_order_and_failover() -> None:
    assert SETTINGS.order_of("eu") == ["eu", "us"]
    assert SETTINGS.order_of("us") == ["us", "eu", "ap"]  # default: the others, in order
    assert SETTINGS.order_of("ap") == ["ap", "us", "eu"]


def test_nested_and_wildcard_tenant_domains_share_their_apex_zone() -> None:
    zones = dns.tenant_zones(SETTINGS, FLEET, TENANTS)
    assert sorted(zones) == ["cdn.customer-a.test", "cdn.customer-c.test"]
    assert "\nstatic 30/30 DYNA geoip!edge\n" in zones["cdn.customer-a.test"]
    assert "\n* 30/30 DYNA geoip!edge\n" in zones["cdn.customer-c.test"]


def test_customer_records_point_every_domain_at_the_tenant_name() -> None:
    assert dns.customer_records(SETTINGS, TENANTS[1]) == [
        ("*.cdn.customer-c.test.", "CNAME", "customer-c.cdn.test."),
        ("cdn.customer-c.test.", "CNAME", "customer-c.cdn.test."),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"regions": {"eu": {"nets": ["192.0.2.1/24"]}}}, r"regions\.eu\.nets.*host bits"),
        ({"regions": {"eu": {"failover": ["mars"]}}}, r"regions\.eu\.failover.*mars"),
        ({"health": {"interval": 2, "timeout": 2}}, "health.timeout"),
        ({"edge_ttl": 1}, "edge_ttl"),
    ],
)
def test_bad_settings_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(dns.DnsError, match=message):
        dns.parse_settings({"domain": "cdn.test", "regions": {"eu": {}}} | change, "dns.yml")


def test_regions_must_match_the_inventory() -> None:
    lone = dns.Fleet(edges=(dns.Host("eu-edge-1", "eu", "192.0.2.10"),), dns=FLEET.dns)
    with pytest.raises(dns.DnsError, match=r"\['us', 'ap'\] have no edge"):
        dns.render_config(SETTINGS, lone, SERVER)
    stray = dns.Fleet(edges=(*FLEET.edges, dns.Host("sa-edge-1", "sa", "192.0.2.99")), dns=())
    with pytest.raises(dns.DnsError, match=r"regions \['sa'\]"):
        dns.render_config(SETTINGS, stray, SERVER)


def test_tenant_domains_under_the_platform_domain_are_refused() -> None:
    with pytest.raises(dns.DnsError, match="under the platform domain"):
        dns.tenant_zones(SETTINGS, FLEET, [dns.TenantNames("x", ("x.cdn.test",))])


def test_write_tree_removes_zones_no_longer_rendered(tmp_path: Path) -> None:
    dns.write_tree(tmp_path, "config", {"a.test": "a", "b.test": "b"})
    dns.write_tree(tmp_path, "config", {"a.test": "a"})
    assert sorted(p.name for p in (tmp_path / "zones").iterdir()) == ["a.test"]


def test_pulumis_platform_variables_fill_in_domain_and_nets(tmp_path: Path) -> None:
    platform = {
        "cdn_domain": "cdn.example.net",
        "cdn_regions": {"eu": {"client_networks": ["192.0.2.0/25"]}, "us": {}},
    }
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    settings_file = tmp_path / "group_vars" / "all" / "dns.yml"
    settings_file.write_text("cdn_dns:\n  regions:\n    us:\n      nets: [192.0.2.128/25]\n")
    settings = dns.load_settings(tmp_path, platform)
    assert settings.domain == "cdn.example.net"
    assert settings.regions["eu"].nets == ["192.0.2.0/25"]
    assert settings.regions["us"].nets == ["192.0.2.128/25"]  # dns.yml wins
    settings_file.unlink()
    assert dns.load_settings(tmp_path, platform).regions["us"].nets == []
    with pytest.raises(dns.DnsError, match=r"dns\.yml: not found"):
        dns.load_settings(tmp_path, {})


def test_each_dns_host_gets_its_own_listen_addresses(tmp_path: Path) -> None:
    servers = tmp_path / "servers.json"
    servers.write_text(
        json.dumps(
            {
                "eu-dns-1": {"listen": ["192.0.2.53", "198.51.100.1:5353"], "run_dir": "/run/g"},
                "us-dns-1": {"listen": ["2001:db8::53", "[2001:db8::54]:53"]},
            }
        )
    )
    loaded = dns.load_servers(servers, FLEET)
    assert loaded["eu-dns-1"] == dns.ServerOptions(
        ("192.0.2.53", "198.51.100.1:5353"), "/run/g", "/var/lib/gdnsd"
    )
    configs = {host: dns.render_config(SETTINGS, FLEET, s) for host, s in loaded.items()}
    assert "listen => [ 192.0.2.53, 198.51.100.1:5353 ]," in configs["eu-dns-1"]
    assert 'listen => [ 2001:db8::53, "[2001:db8::54]:53" ],' in configs["us-dns-1"]
    dns.write_tree(tmp_path / "out", None, dns.render_zones(SETTINGS, FLEET, TENANTS), configs)
    for host, text in configs.items():
        config_dir = tmp_path / host
        config_dir.mkdir()
        (config_dir / "config").write_text(text)
        (config_dir / "zones").symlink_to(tmp_path / "out" / "zones")
        checked = subprocess.run(
            [GDNSD, "-c", str(config_dir), "checkconf"], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "out" / "config").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"listen": []}, "at least 1 item"),
        ({"listen": ["any", "192.0.2.1"]}, "any already means every address"),
        ({"listen": ["eu-dns-1.example"]}, "is not a listen address"),
        ({"listen": ["192.0.2.1:70000"]}, "the port must be 1-65535"),
        ({"listen": ["192.0.2.1"], "user": "x"}, "Extra inputs"),
    ],
)
def test_bad_server_entries_name_the_host_and_field(
    tmp_path: Path, entry: dict, message: str
) -> None:
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"eu-dns-1": entry}))
    with pytest.raises(dns.DnsError, match=message) as error:
        dns.load_servers(servers, FLEET)
    assert f"{servers}: eu-dns-1." in str(error.value)


def test_servers_of_unknown_hosts_are_refused(tmp_path: Path) -> None:
    servers = tmp_path / "servers.json"
    servers.write_text(json.dumps({"eu-edge-1": {"listen": ["any"]}}))
    with pytest.raises(dns.DnsError, match="eu-edge-1 is not a host of group dns"):
        dns.load_servers(servers, FLEET)
