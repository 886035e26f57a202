"""GeoDNS against a real gdnsd: two regions with one real nginx edge each, two DNS hosts.

Every server listens on 127.0.0.0/8: edges on 127.0.0.11 (eu) and 127.0.0.12 (us), with
the admin listener (GET /health) on the same address as the public one, as on real hosts
where gdnsd checks the address it hands out. Each DNS host runs the geodns role's drain agent
(admin_state.py serve) on 127.0.0.1; the drain tests run twice, once through the agents and
once through Ansible (no admin token: what an inventory without agents gets). Failover and
drain times are printed (the Molecule scenario holds them to 5 s); the bounds asserted here
are generous.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.admin_client import TOKEN_ENV
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode, free_port
from cdnctl.fleet import admin_state, dns, dns_hosts, drain
from cdnctl.fleet.targets import inventory_json
from tests.fleet.conftest import Gdnsd, query, wait_for

REGIONS = {"eu": ("127.0.0.11", "192.0.2.0/24"), "us": ("127.0.0.12", "198.51.100.0/24")}
BOUND = 30.0  # seconds: far above the 2-3 s the lab health settings give
AGENT_TOKEN = "dns-test-agent-token-0123456789"

SETTINGS = {
    "domain": "cdn.test",
    "edge_ttl": 5,
    "tenant_ttl": 30,
    "regions": {region: {"nets": [subnet]} for region, (_, subnet) in REGIONS.items()},
    "health": {"interval": 2, "timeout": 1, "up_thresh": 2, "ok_thresh": 1, "down_thresh": 1},
    "serve_tenant_domains": True,
}
TENANTS = [
    dns.TenantNames("customer-a", ("cdn.customer-a.test",)),
    dns.TenantNames("customer-c", ("*.cdn.customer-c.test", "cdn.customer-c.test")),
]


@dataclass
class Lab:
    inventory: Path
    edges: dict[str, EdgeNode]
    servers: list[Gdnsd]
    fleet: dns.Fleet
    agent_ports: list[int]

    def answers(self, region: str, name: str = "edge.cdn.test") -> list[list[str]]:
        """What every DNS host answers a client of `region`."""
        return [query(s.port, name, REGIONS[region][1]) for s in self.servers]

    def all_answer(self, region: str, address: str) -> bool:
        return all(answer == [address] for answer in self.answers(region))


def health_port() -> int:
    port = free_port("127.0.0.11")
    while not _free("127.0.0.12", port):
        port = free_port("127.0.0.11")
    return port


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("dnslab")
    admin_port = health_port()
    edges = {}
    servers = [Gdnsd("dns-eu"), Gdnsd("dns-us")]
    try:
        for region, (address, _) in REGIONS.items():
            settings = NodeSettings(
                prefix=base / f"{region}-edge-1",
                listen=f"{address}:{free_port(address)}",
                admin_listen=f"{address}:{admin_port}",
                admin_token="dns-test-admin-token",
                workers=1,
            )
            edges[f"{region}-edge-1"] = EdgeNode(settings).start()
        inventory = base / "inventory"
        (inventory / "group_vars" / "all").mkdir(parents=True)
        (inventory / "group_vars" / "all" / "dns.yml").write_text(
            yaml.safe_dump({"cdn_dns": SETTINGS})
        )
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        agent_ports = [server.start_agent(AGENT_TOKEN) for server in servers]
        hosts = {
            "edge": {
                f"{region}-edge-1": {
                    "cdn_region": region,
                    "cdn_public_address": address,
                    "cdn_admin_api_port": admin_port,
                }
                for region, (address, _) in REGIONS.items()
            },
            "dns": {
                f"{region}-dns-1": {
                    **local,
                    "cdn_region": region,
                    "cdn_public_address": "127.0.0.1",
                    "geodns_state_dir": str(server.state_dir),
                    "geodns_config_dir": str(server.config_dir),
                    "cdn_private_address": "127.0.0.1",
                    "cdn_dns_admin_port": port,
                }
                for region, server, port in zip(REGIONS, servers, agent_ports, strict=True)
            },
        }
        (inventory / "hosts.yml").write_text(
            yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}})
        )
        listing = inventory_json(inventory)
        settings = dns.load_settings(inventory, dns.platform_vars(listing))
        fleet = dns.fleet_from_inventory(listing)
        zones = dns.render_zones(settings, fleet, TENANTS)
        for server in servers:
            dns.write_tree(
                server.config_dir, dns.render_config(settings, fleet, server.server), zones
            )
            checked = server.checkconf()
            assert checked.returncode == 0, checked.stderr
            server.start()
        result = Lab(inventory, edges, servers, fleet, agent_ports)
        for region, (address, _) in REGIONS.items():
            wait_for(lambda r=region, a=address: result.all_answer(r, a), BOUND)
        yield result
    finally:
        for server in servers:
            server.stop()
        for edge in edges.values():
            edge.stop()


@pytest.fixture(params=["agent", "ansible"])
def hosts(request: pytest.FixtureRequest, lab: Lab, monkeypatch) -> dns_hosts.DnsHosts:
    """The lab's DNS hosts, edited through their drain agents or through Ansible; the CLI
    likewise ($CDNCTL_ADMIN_TOKEN set, or empty)."""
    token = AGENT_TOKEN if request.param == "agent" else ""
    monkeypatch.setenv(TOKEN_ENV, token)
    return dns_hosts.DnsHosts(lab.inventory, token=token)


def carried(result: drain.DrainResult, hosts: dns_hosts.DnsHosts) -> bool:
    """Every host's edit went the way `hosts` asks for."""
    return {host.via for host in result.hosts} == {"agent" if hosts.token else "ansible"}


def test_every_dns_host_sends_each_region_to_its_edge(lab: Lab) -> None:
    for region, (address, _) in REGIONS.items():
        assert lab.answers(region) == [[address], [address]]
        pinned = [query(s.port, f"edge-{region}.cdn.test") for s in lab.servers]
        assert pinned == [[address], [address]]


def test_tenant_names_and_test_domains(lab: Lab) -> None:
    port = lab.servers[0].port
    assert query(port, "customer-a.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    eu = REGIONS["eu"][1]
    assert query(port, "cdn.customer-a.test", eu) == [REGIONS["eu"][0]]
    assert query(port, "img.cdn.customer-c.test", REGIONS["us"][1]) == [REGIONS["us"][0]]
    assert query(port, "cdn.customer-c.test", eu) == [REGIONS["eu"][0]]


def test_a_stopped_edge_hands_its_clients_to_the_next_region(lab: Lab) -> None:
    eu_edge = lab.edges["eu-edge-1"]
    us_address = REGIONS["us"][0]
    eu_edge.stop()
    try:
        seconds = wait_for(lambda: lab.all_answer("eu", us_address), BOUND)
        print(f"\nfailover: eu clients on the us edge {seconds:.2f} s after its nginx stopped")
    finally:
        eu_edge.start()
    seconds = wait_for(lambda: lab.all_answer("eu", REGIONS["eu"][0]), BOUND)
    print(f"recovery: eu clients back on the eu edge {seconds:.2f} s after it started")


def test_region_drain_and_undrain_on_every_dns_host(lab: Lab, hosts: dns_hosts.DnsHosts) -> None:
    start = time.monotonic()
    result = drain.set_drain(hosts, "eu", drain=True)
    landed = time.monotonic()
    assert result.ok, result.hosts
    assert carried(result, hosts), result.hosts
    assert result.after.regions == {"eu"}
    try:
        wait_for(lambda: lab.all_answer("eu", REGIONS["us"][0]), BOUND)
        print(
            f"\ndrain eu: effective on both DNS hosts {time.monotonic() - start:.2f} s after "
            f"the command started ({time.monotonic() - landed:.2f} s after admin_state landed)"
        )
        with pytest.raises(drain.DrainRefused, match="no edge of the fleet"):
            drain.set_drain(hosts, "us", drain=True)
        assert lab.answers("us") == [[REGIONS["us"][0]]] * 2
    finally:
        started = time.monotonic()
        undone = drain.set_drain(hosts, "eu", drain=False)
    assert undone.ok and undone.after == drain.Drains()
    wait_for(lambda: lab.all_answer("eu", REGIONS["eu"][0]), BOUND)
    print(f"undrain eu: effective {time.monotonic() - started:.2f} s after the command started")


def test_a_drain_is_in_the_answers_when_the_command_returns(
    lab: Lab, hosts: dns_hosts.DnsHosts
) -> None:
    """gdnsd as the geodns role runs it (geodns_immediate_states): each host's edit returns
    once its gdnsd answers from it, without sleeping for a state table swap."""
    result = drain.set_drain(hosts, "eu", drain=True)
    try:
        assert lab.answers("eu") == [[REGIONS["us"][0]]] * 2  # no wait_for: already in force
        assert all(h.in_force and h.waited < admin_state.SWAP_SECONDS for h in result.hosts)
    finally:
        undone = drain.set_drain(hosts, "eu", drain=False)
    assert lab.answers("eu") == [[REGIONS["eu"][0]]] * 2, undone.hosts


def test_draining_a_regions_last_edge_needs_force(lab: Lab, hosts: dns_hosts.DnsHosts) -> None:
    with pytest.raises(drain.DrainRefused, match="region eu would have no edge"):
        drain.set_drain(hosts, "eu-edge-1", drain=True)
    assert drain.current_state(hosts).drains == drain.Drains()
    forced = drain.set_drain(hosts, "eu-edge-1", drain=True, force=True)
    try:
        assert forced.after.edges == {"eu-edge-1"}
        seconds = wait_for(lambda: lab.all_answer("eu", REGIONS["us"][0]), BOUND)
        print(f"\nforced drain of eu-edge-1: {seconds:.2f} s")
        states = {r.host: json.loads(r.stdout) for r in hosts.states()}
        for host_states in states.values():
            assert host_states[f"{REGIONS['eu'][0]}/edge_health"]["state"].startswith("DOWN")
            assert host_states[f"{REGIONS['eu'][0]}/edge_health"]["real_state"].startswith("UP")
    finally:
        drain.set_drain(hosts, "eu-edge-1", drain=False)
    wait_for(lambda: lab.all_answer("eu", REGIONS["eu"][0]), BOUND)


def test_a_broken_zone_never_replaces_a_working_one(lab: Lab) -> None:
    server = lab.servers[0]
    zone = server.config_dir / "zones" / "cdn.test"
    good = zone.read_text()
    zone.write_text(good + "broken-record 30 CNAME\n")
    try:
        assert server.checkconf().returncode != 0
        assert server.ctl("reload-zones").returncode != 0
        assert query(server.port, "customer-a.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    finally:
        zone.write_text(good)
    assert server.ctl("reload-zones").returncode == 0


def test_acme_dns_01_payloads_are_served_by_every_dns_host(lab: Lab) -> None:
    payload = "x" * 43  # a base64url SHA-256, as ACME clients send
    results = dns_hosts.DnsHosts(lab.inventory).acme_dns_01({"_acme-challenge.cdn.test": payload})
    assert all(r.ok for r in results), results
    for server in lab.servers:
        assert query(server.port, "_acme-challenge.cdn.test", rtype="TXT") == [f'"{payload}"']


def test_the_sre_commands(lab: Lab, hosts: dns_hosts.DnsHosts) -> None:
    runner = CliRunner()
    inventory = ["--inventory", str(lab.inventory)]
    unknown = runner.invoke(app, ["drain", "mars", *inventory])
    assert unknown.exit_code == 2 and "neither an edge nor a region" in unknown.output
    drained = runner.invoke(app, ["drain", "us", *inventory])
    try:
        assert drained.exit_code == 0, drained.output
        assert "drained regions: us" in drained.output
        assert drained.output.count("in force after") == 2, drained.output
        way = "drain agent" if hosts.token else "Ansible"
        assert drained.output.count(f"({way})") == 2, drained.output
        refused = runner.invoke(app, ["drain", "eu-edge-1", *inventory])
        assert refused.exit_code == 1
        assert "refusing to drain edge eu-edge-1" in refused.output
        wait_for(lambda: lab.all_answer("us", REGIONS["eu"][0]), BOUND)
        status = runner.invoke(app, ["dns", "status", *inventory, "--format", "json"])
        assert status.exit_code == 0, status.output
        views = json.loads(status.output)
        assert sorted(views) == ["eu-dns-1", "us-dns-1"]
        assert all(view["geoip/edge/us"]["state"].startswith("DOWN") for view in views.values())
    finally:
        undrained = runner.invoke(app, ["undrain", "us", *inventory])
    assert undrained.exit_code == 0, undrained.output
    wait_for(lambda: lab.all_answer("us", REGIONS["us"][0]), BOUND)


def test_a_refusal_on_one_host_is_undone_where_another_accepted(
    lab: Lab, hosts: dns_hosts.DnsHosts
) -> None:
    """eu-dns-1 missed nothing, us-dns-1 has region us drained (diverged): draining region
    eu leaves no edge on us-dns-1's view, so it is refused everywhere."""
    diverged = lab.servers[1].state_dir / "admin_state"
    diverged.write_text("geoip/edge/us => DOWN # cdnctl drain region us\n")
    try:
        with pytest.raises(drain.DrainRefused, match="no edge of the fleet would be left"):
            drain.set_drain(hosts, "eu", drain=True)
        assert not (lab.servers[0].state_dir / "admin_state").read_text().strip()
        assert "region us" in diverged.read_text()
    finally:
        diverged.write_text("")
    wait_for(lambda: lab.all_answer("us", REGIONS["us"][0]), BOUND)


def test_diverged_hosts_converge_on_the_union(lab: Lab, hosts: dns_hosts.DnsHosts) -> None:
    first, second = (s.state_dir / "admin_state" for s in lab.servers)
    first.write_text("geoip/edge/us => DOWN # cdnctl drain region us\n")
    try:
        result = drain.set_drain(hosts, "eu-edge-1", drain=True, force=True)
        assert result.ok and result.after == drain.Drains(
            frozenset({"eu-edge-1"}), frozenset({"us"})
        )
        assert first.read_text() == second.read_text()
        assert all(host.in_force for host in result.hosts), result.hosts
    finally:
        undone = drain.set_drain(hosts, "us", drain=False)
        drain.set_drain(hosts, "eu-edge-1", drain=False)
    assert undone.after == drain.Drains(frozenset({"eu-edge-1"}))
    assert first.read_text() == second.read_text() == ""
    for region, (address, _) in REGIONS.items():
        wait_for(lambda r=region, a=address: lab.all_answer(r, a), BOUND)


def test_a_file_gdnsd_refuses_fails_the_command(
    lab: Lab, hosts: dns_hosts.DnsHosts, monkeypatch
) -> None:
    """A line gdnsd cannot parse voids the whole file (gdnsd keeps the states it had): the
    drain is written but never in force there, and the command says so."""
    monkeypatch.setattr(drain, "WAIT_SECONDS", 3.0)
    refused = lab.servers[0].state_dir / "admin_state"
    refused.write_text("192.0.2.99/* => MAYBE # an SRE's typo\n")
    try:
        result = CliRunner().invoke(app, ["drain", "us", "--inventory", str(lab.inventory)])
        assert result.exit_code == 1, result.output
        assert "eu-dns-1: admin_state ok, not in force after" in result.output
        assert "us-dns-1: admin_state ok, in force after" in result.output
        assert "gdnsd on eu-dns-1 did not apply admin_state within 3 s" in result.output
    finally:
        for server in lab.servers:
            (server.state_dir / "admin_state").write_text("")
    wait_for(lambda: lab.all_answer("us", REGIONS["us"][0]), BOUND)


def test_the_drain_agent_refuses_bad_calls_and_changes_nothing(lab: Lab) -> None:
    url = f"http://127.0.0.1:{lab.agent_ports[0]}/admin-state"
    state = lab.servers[0].state_dir / "admin_state"
    before = state.read_text() if state.exists() else ""
    edges = {name: [region, address] for name, (region, address) in admin_edges(lab).items()}
    drain_us = {
        "request": {
            "target": "us",
            "drain": True,
            "resource": "edge",
            "service_type": "edge_health",
            "wait": 1,
        },
        "edges": edges,
    }
    auth = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    wrong = httpx.post(url, json=drain_us, headers={"Authorization": "Bearer not-the-token-0000"})
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    missing = httpx.post(url, json=drain_us)
    assert missing.status_code == 401
    unknown = {**drain_us, "request": {**drain_us["request"], "target": "mars"}}
    refused = httpx.post(url, json=unknown, headers=auth)
    assert refused.status_code == 400
    assert "'mars' is neither an edge nor a region" in refused.json()["error"]
    garbled = httpx.post(url, content=b"{not json", headers=auth)
    assert garbled.status_code == 400 and "invalid request body" in garbled.json()["error"]
    huge = httpx.post(url, content=b" " * (admin_state.MAX_REQUEST_BYTES + 1), headers=auth)
    assert huge.status_code == 413
    assert (
        httpx.post(url.replace("admin-state", "other"), json=drain_us, headers=auth).status_code
        == 404
    )
    assert (state.read_text() if state.exists() else "") == before
    assert lab.all_answer("us", REGIONS["us"][0])
    health = httpx.get(url.replace("admin-state", "health"))
    assert health.status_code == 200 and health.json() == {"ok": True, "gdnsd": True}


def admin_edges(lab: Lab) -> dict[str, tuple[str, str]]:
    return {edge.name: (edge.region, edge.address) for edge in lab.fleet.edges}


def test_a_dns_host_whose_agent_is_down_is_drained_through_ansible(lab: Lab) -> None:
    hosts = dns_hosts.DnsHosts(lab.inventory, token=AGENT_TOKEN)
    lab.servers[0].stop_agent()
    try:
        result = drain.set_drain(hosts, "eu", drain=True)
        try:
            assert result.ok, result.hosts
            assert {h.host: h.via for h in result.hosts} == {
                "eu-dns-1": "ansible",
                "us-dns-1": "agent",
            }
            assert lab.answers("eu") == [[REGIONS["us"][0]]] * 2
        finally:
            undone = drain.set_drain(hosts, "eu", drain=False)
        assert undone.ok and undone.after == drain.Drains()
    finally:
        lab.servers[0].start_agent(AGENT_TOKEN, lab.agent_ports[0])
    wait_for(lambda: lab.all_answer("eu", REGIONS["eu"][0]), BOUND)


def test_an_agent_with_another_token_is_bypassed(lab: Lab) -> None:
    """A token rotated on the controller before the DNS hosts were converged again: the
    agents refuse it (401) and the drain goes through Ansible."""
    hosts = dns_hosts.DnsHosts(lab.inventory, token="a-newer-token-than-the-agents-have")
    result = drain.set_drain(hosts, "us", drain=True)
    try:
        assert result.ok and {h.via for h in result.hosts} == {"ansible"}
    finally:
        drain.set_drain(hosts, "us", drain=False)
    wait_for(lambda: lab.all_answer("us", REGIONS["us"][0]), BOUND)
