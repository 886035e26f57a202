"""GeoDNS and ACME certificates of the converged two-region CDN (one edge, one DNS host each).

Queries go from the controller to both DNS hosts with an EDNS Client Subnet (dnspython), HTTPS
requests straight to the edges' addresses with the tenant's SNI, host checks through
testinfra's podman backend. pebble (prepare.yml) runs on 127.0.0.1 and resolves through the
eu DNS host. Tests that stop or drain something restore it before they end. Measured times
are printed as JSON lines (molecule runs pytest with -s).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest
import testinfra
from cryptography import x509

from cdnctl.lab.sample_origin import body_for

SCENARIO = Path(__file__).resolve().parents[1]
REPO = SCENARIO.parents[1]
TENANTS = SCENARIO / "tenants"
INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
# The state directory of prepare.yml and group_vars/all/certificates.yml.
STATE = Path("/tmp/cdnctl-molecule-dns_tls")
LISTENER_CA = STATE / "pebble" / "listener.pem"
PEBBLE_MANAGEMENT = "https://127.0.0.1:14111"

DNS_HOSTS = {"dns-eu-dns-1": "10.88.78.50", "dns-us-dns-1": "10.88.78.60"}
EDGES = {"eu": ("dns-eu-edge-1", "10.88.78.31"), "us": ("dns-us-edge-1", "10.88.78.41")}
# A client network of each region (group_vars/all/cdn.yml, cdn_regions.*.client_networks).
CLIENTS = {
    "eu": ("192.0.2.0/25", "2001:db8:100::/56"),
    "us": ("192.0.2.128/25", "2001:db8:200::/56"),
}
TENANT = "customer-tls"
DOMAINS = ("static.customer-tls.test", "www.customer-tls.test")
NAMES = ("edge.cdn.test", *DOMAINS)
LIMIT = 5.0  # seconds: failover, drain and undrain (issue 12)
BOUND = 30.0  # seconds: how long a test waits for anything before it fails
RUN = uuid.uuid4().hex[:12]


def node(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{name}")


def answer(server: str, name: str, subnet: str | None = None) -> list[str]:
    """The A records `server` answers for `name` to a client in `subnet` (ECS)."""
    options = [dns.edns.ECSOption.from_text(subnet)] if subnet else []
    query = dns.message.make_query(name, "A", use_edns=0, options=options)
    response = dns.query.udp(query, server, timeout=1)
    return sorted(
        item.address
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.A
        for item in rrset
    )


def region_view(region: str) -> dict[str, list[str]]:
    """What every DNS host answers every name for clients of `region`."""
    return {
        f"{host} {name} {subnet}": answer(address, name, subnet)
        for host, address in DNS_HOSTS.items()
        for name in NAMES
        for subnet in CLIENTS[region]
    }


def wait_until_served_by(region: str, edge_region: str, since: float) -> float:
    """Seconds from `since` until every DNS host sends `region`'s clients to the edge of
    `edge_region` (polled every 0.1 s, at most BOUND)."""
    expected = [EDGES[edge_region][1]]
    while True:
        view = region_view(region)
        if all(addresses == expected for addresses in view.values()):
            return time.monotonic() - since
        if time.monotonic() - since > BOUND:
            pytest.fail(f"after {BOUND:.0f} s {region} clients are not sent to {expected}: {view}")
        time.sleep(0.1)


def report(measure: str, **values: object) -> None:
    print(json.dumps({"measure": measure, **values}, sort_keys=True))


LAST_DRAIN: list[subprocess.CompletedProcess[str]] = []  # what the last cdnctl drain printed


def cdnctl(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "cdnctl"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
    )
    if args[0] == "drain":
        LAST_DRAIN.append(result)
    return result


def assert_service(host: testinfra.host.Host, unit: str) -> None:
    service = host.service(unit)
    if not service.is_running:
        journal = host.run(f"journalctl -u {unit} --no-pager -n 30").stdout
        pytest.fail(f"{unit} is not running on {host.backend.host}:\n{journal}")
    assert service.is_enabled, f"{unit} is not enabled on {host.backend.host}"


@pytest.mark.parametrize("name", sorted(DNS_HOSTS))
def test_gdnsd_serves_on_every_dns_host(name: str) -> None:
    host = node(name)
    assert_service(host, "gdnsd")
    for socket in (f"udp://{DNS_HOSTS[name]}:53", f"tcp://{DNS_HOSTS[name]}:53"):
        assert host.socket(socket).is_listening, f"{socket} not listening on {name}"
    # The drain agent cdnctl drain calls (geodns role), as gdnsd's user, private address.
    assert_service(host, "cdnctl-dns-admin")
    assert host.socket(f"tcp://{DNS_HOSTS[name]}:9154").is_listening
    # The unit's main process (no procps in the image: /proc and stat).
    pid = host.check_output("systemctl show -p MainPID --value cdnctl-dns-admin")
    args = host.check_output(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "admin_state.py serve" in args, args
    assert host.check_output(f"stat -c %U /proc/{pid}") == "gdnsd", args


@pytest.mark.parametrize("region", sorted(CLIENTS))
def test_every_dns_host_sends_clients_to_their_regions_edge(region: str) -> None:
    view = region_view(region)
    assert all(addresses == [EDGES[region][1]] for addresses in view.values()), view


def test_stopping_an_edges_nginx_moves_its_clients_to_the_other_region() -> None:
    edge = node(EDGES["eu"][0])
    begun = time.monotonic()
    edge.check_output("systemctl stop cdnctl-nginx")
    stopped = time.monotonic()
    try:
        failover = wait_until_served_by("eu", "us", stopped)
    finally:
        edge.check_output("systemctl start cdnctl-nginx")
        started = time.monotonic()
        recovery = wait_until_served_by("eu", "eu", started)
    report(
        "failover_edge_nginx_stopped",
        seconds=round(failover, 2),
        stop_command_seconds=round(stopped - begun, 2),
        back_after_start_seconds=round(recovery, 2),
    )
    assert failover <= LIMIT, f"eu clients moved to us {failover:.2f} s after nginx stopped"


def test_drain_refuses_to_leave_a_region_without_an_edge() -> None:
    result = cdnctl("drain", EDGES["eu"][0], "--inventory", str(INVENTORY))
    assert result.returncode != 0, result.stdout
    assert "--force" in result.stdout + result.stderr, result.stdout + result.stderr
    assert all(addresses == [EDGES["eu"][1]] for addresses in region_view("eu").values())


def timed(command: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[float, float]:
    """(start, seconds the command took); fails on a non-zero exit."""
    start = time.monotonic()
    result = command()
    assert result.returncode == 0, result.stdout + result.stderr
    return start, time.monotonic() - start


def test_drain_and_undrain_a_region_take_effect_within_5_s() -> None:
    start, drain_command = timed(lambda: cdnctl("drain", "eu", "--inventory", str(INVENTORY)))
    try:
        drained = wait_until_served_by("eu", "us", start)
        # Every DNS host took the edit from its drain agent (one HTTP call, not Ansible).
        assert LAST_DRAIN[-1].stdout.count("(drain agent)") == len(DNS_HOSTS), LAST_DRAIN[-1]
        # The other region keeps its own edge.
        assert all(a == [EDGES["us"][1]] for a in region_view("us").values())
    finally:
        start, undrain_command = timed(
            lambda: cdnctl("undrain", "eu", "--inventory", str(INVENTORY))
        )
        undrained = wait_until_served_by("eu", "eu", start)
    report(
        "drain_region",
        drain_seconds=round(drained, 2),
        drain_command_seconds=round(drain_command, 2),
        undrain_seconds=round(undrained, 2),
        undrain_command_seconds=round(undrain_command, 2),
    )
    assert drained <= LIMIT, f"drain took {drained:.2f} s (command {drain_command:.2f} s)"
    assert undrained <= LIMIT, f"undrain took {undrained:.2f} s (command {undrain_command:.2f} s)"


def pebble_root() -> ssl.SSLContext:
    """Trusts pebble's issuing root only (new at every pebble start)."""
    listener = ssl.create_default_context(cafile=str(LISTENER_CA))
    root = httpx.get(f"{PEBBLE_MANAGEMENT}/roots/0", verify=listener, timeout=5).text
    return ssl.create_default_context(cadata=root)


def https_get(
    context: ssl.SSLContext, address: str, domain: str, path: str
) -> tuple[httpx.Response, x509.Certificate]:
    """GET https://<domain><path> from the edge at `address` (SNI and Host: domain): the
    response and the certificate the edge served."""
    with httpx.Client(verify=context, timeout=10) as client:
        response = client.get(
            f"https://{address}{path}",
            headers={"Host": domain},
            extensions={"sni_hostname": domain},
        )
        ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
        served = x509.load_der_x509_certificate(ssl_object.getpeercert(True))
    return response, served


def san(certificate: x509.Certificate) -> list[str]:
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return sorted(extension.value.get_values_for_type(x509.DNSName))


def test_pebble_validated_the_tenant_through_geodns() -> None:
    """pebble resolves through the eu DNS host: each name's HTTP-01 check reached the edge
    GeoDNS gives the controller, and that edge answered the token."""
    for domain in DOMAINS:
        (address,) = answer(DNS_HOSTS["dns-eu-dns-1"], domain)
        name = next(name for name, edge_address in EDGES.values() if edge_address == address)
        log = node(name).check_output("cat /var/lib/cdnctl/nginx/logs/access.log")
        checks = [
            entry
            for entry in map(json.loads, log.splitlines())
            if entry["host"].split(":")[0] == domain
            and entry["uri"].startswith("/.well-known/acme-challenge/")
        ]
        assert checks, f"no HTTP-01 check for {domain} reached {name} ({address})"
        assert {entry["status"] for entry in checks} == {200}, checks


@pytest.mark.parametrize("region", sorted(EDGES))
def test_each_edge_serves_the_tenant_over_https_with_pebbles_certificate(region: str) -> None:
    context = pebble_root()
    _, address = EDGES[region]
    for domain in DOMAINS:
        path = f"/molecule/{RUN}/{region}.bin"
        response, served = https_get(context, address, domain, path)
        assert response.status_code == 200, response.text[:300]
        assert response.content == body_for(TENANT, path, 1024)
        assert san(served) == sorted(DOMAINS)


def renew() -> dict[str, object]:
    result = cdnctl(
        "certs", "renew", "--inventory", str(INVENTORY), "--tenants", str(TENANTS),
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_a_second_run_issues_and_sends_nothing() -> None:
    run = renew()
    assert run["issued"] == []
    assert [(e["set"], e["removed"]) for e in run["edges"]] == [([], []), ([], [])], run


def nginx_processes(name: str) -> tuple[str, list[str]]:
    """cdnctl-nginx's master PID and its workers' PIDs (a reload replaces the workers)."""
    host = node(name)
    master = host.check_output("systemctl show -p MainPID --value cdnctl-nginx")
    # /proc/<pid>/stat: "pid (comm) state ppid ..." (the image has no procps)
    stats = host.check_output("cat /proc/[0-9]*/stat 2>/dev/null || true").splitlines()
    workers = []
    for line in stats:
        pid, rest = line.split(" ", 1)
        if rest.rsplit(")", 1)[1].split()[1] == master:
            workers.append(pid)
    return master, sorted(workers)


def test_issuing_a_certificate_does_not_reload_nginx() -> None:
    context = pebble_root()
    before = {name: nginx_processes(name) for name, _ in EDGES.values()}
    serials = {
        address: https_get(context, address, DOMAINS[0], f"/molecule/{RUN}/a.bin")[1].serial_number
        for _, address in EDGES.values()
    }
    for suffix in (".crt", ".key"):  # the controller forgets it: the next run issues anew
        (STATE / "certificates" / f"{TENANT}{suffix}").unlink()
    run = renew()
    assert run["issued"] == [TENANT], run
    for _, address in EDGES.values():
        _, served = https_get(context, address, DOMAINS[0], f"/molecule/{RUN}/b.bin")
        assert served.serial_number != serials[address], f"{address} serves the old certificate"
        assert san(served) == sorted(DOMAINS)
    after = {name: nginx_processes(name) for name, _ in EDGES.values()}
    assert after == before, "nginx was restarted or reloaded while the certificate was issued"
