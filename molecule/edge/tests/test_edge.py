"""Behaviour of the converged one-region CDN: origin, shield, two edges, sample tenants.

Requests go from the controller straight to the containers' addresses on the podman network
(the same addresses the inventory gives as cdn_private_address / cdn_public_address); host
checks use testinfra's podman backend (`podman exec`, with molecule's CONTAINERS_CONF).
"""

from __future__ import annotations

import os
import ssl
import uuid

import httpx
import pytest
import testinfra
from cryptography import x509

from cdnctl.edge.pki import self_signed_pem
from cdnctl.lab.sample_origin import body_for

TOKEN = os.environ["CDNCTL_ADMIN_TOKEN"]
ORIGIN = "cdn-origin"
SHIELD = ("cdn-eu-shield-1", "10.88.77.20")
EDGES = {"cdn-eu-edge-1": "10.88.77.31", "cdn-eu-edge-2": "10.88.77.32"}
ADMIN_PORT = 9145
# tenant id -> (Host to ask the edge for, origin base path, goes through the shield)
TENANTS = {
    "customer-a": ("cdn.customer-a.test", "", True),
    "customer-b": ("cdn.customer-b.test", "/assets", True),
    "customer-c": ("img.cdn.customer-c.test", "", False),
}
RUN = uuid.uuid4().hex[:12]  # fresh paths every run: nothing is cached from before


def node(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"podman://{name}")


def assert_service(host: testinfra.host.Host, unit: str) -> None:
    service = host.service(unit)
    if not service.is_running:
        journal = host.run(f"journalctl -u {unit} --no-pager -n 30").stdout
        pytest.fail(f"{unit} is not running on {host.backend.host}:\n{journal}")
    assert service.is_enabled, f"{unit} is not enabled on {host.backend.host}"


@pytest.mark.parametrize("name", [SHIELD[0], *EDGES])
def test_cdn_node_services_and_listeners(name: str) -> None:
    host = node(name)
    assert_service(host, "cdnctl-nginx")
    assert_service(host, "prometheus-node-exporter")
    address = SHIELD[1] if name == SHIELD[0] else EDGES[name]
    public = f"tcp://{address}:8080" if name == SHIELD[0] else "tcp://0.0.0.0:80"
    for socket in (public, f"tcp://{address}:{ADMIN_PORT}", f"tcp://{address}:9100"):
        assert host.socket(socket).is_listening, f"{socket} not listening on {name}"
    # The packaged nginx unit is stopped: the node's own unit owns the listeners.
    assert not host.service("nginx").is_running


def test_lab_origins_run() -> None:
    host = node(ORIGIN)
    for tenant, port in (("customer-a", 18081), ("customer-b", 18082), ("customer-c", 18083)):
        assert_service(host, f"cdnctl-lab-origin@{tenant}")
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def origin_log(tenant: str) -> list[str]:
    unit = f"cdnctl-lab-origin@{tenant}"
    return node(ORIGIN).check_output(f"journalctl -u {unit} --no-pager -o cat").splitlines()


@pytest.mark.parametrize("tenant", sorted(TENANTS))
def test_each_edge_serves_the_tenants_bytes_and_caches_them(tenant: str) -> None:
    domain, base_path, shielded = TENANTS[tenant]
    path = f"/molecule/{RUN}/{tenant}.bin"
    expected = body_for(tenant, base_path + path, 1024)
    with httpx.Client(timeout=10) as client:
        for name, address in EDGES.items():
            statuses = []
            for _ in range(2):
                response = client.get(f"http://{address}{path}", headers={"Host": domain})
                assert response.status_code == 200, f"{name}: {response.text[:300]}"
                assert response.content == expected, f"{name} served other bytes for {tenant}"
                statuses.append(response.headers.get("X-Cache-Status"))
            assert statuses == ["MISS", "HIT"], f"{name}: {statuses}"
    seen = [line for line in origin_log(tenant) if line.startswith(f"GET {base_path}{path} ")]
    # Shielded tenants: the shield absorbs the second edge's miss. customer-c has no shield.
    assert len(seen) == (1 if shielded else len(EDGES)), seen
    if tenant == "customer-b":
        assert all(line.endswith(" auth") for line in seen), seen  # basic auth reached it


def test_unknown_host_is_404_on_every_edge() -> None:
    for address in EDGES.values():
        response = httpx.get(f"http://{address}/", headers={"Host": "nobody.test"}, timeout=10)
        assert response.status_code == 404
        assert response.json()["error"] == "unknown host"


@pytest.mark.parametrize("address", [SHIELD[1], *EDGES.values()])
def test_admin_api_wants_the_token(address: str) -> None:
    base = f"http://{address}:{ADMIN_PORT}"
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert httpx.get(f"{base}/config", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{base}/config", headers=wrong, timeout=10).status_code == 401
    assert httpx.post(f"{base}/config", content=b"{}", timeout=10).status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    running = httpx.get(f"{base}/config", headers=right, timeout=10).json()
    assert running["tenants"] == len(TENANTS)
    assert running["version"].startswith("sha256:")


def test_public_listener_does_not_serve_the_admin_api() -> None:
    for address in EDGES.values():
        response = httpx.get(f"http://{address}/config", headers={"Host": address}, timeout=10)
        assert response.status_code == 404


def https_get(client: httpx.Client, address: str, domain: str, path: str) -> httpx.Response:
    """GET over TLS to the edge's address, with the tenant's name as SNI and Host."""
    request = client.build_request(
        "GET",
        f"https://{address}{path}",
        headers={"Host": domain},
        extensions={"sni_hostname": domain},
    )
    return client.send(request)


@pytest.mark.parametrize("name", sorted(EDGES))
def test_https_default_certificate_then_a_pushed_one_without_reload(name: str) -> None:
    address = EDGES[name]
    domain, base_path, _ = TENANTS["customer-a"]
    host = node(name)
    master = host.check_output("systemctl show -p MainPID --value cdnctl-nginx")
    assert host.socket("tcp://0.0.0.0:443").is_listening
    # No SNI, or a name without a tenant certificate: the self-signed default answers.
    default = x509.load_pem_x509_certificate(ssl.get_server_certificate((address, 443)).encode())
    assert default.subject.rfc4514_string() == "CN=default.cdnctl.invalid"
    # A certificate pushed through the admin API is served at once, no reload.
    cert, key = self_signed_pem([domain], days=1)
    pushed = httpx.post(
        f"http://{address}:{ADMIN_PORT}/certificates",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"set": [{"tenant": "customer-a", "cert": cert.decode(), "key": key.decode()}]},
        timeout=10,
    )
    assert pushed.status_code == 200, pushed.text
    path = f"/molecule/{RUN}/tls.bin"
    with httpx.Client(
        verify=ssl.create_default_context(cadata=cert.decode()), timeout=10
    ) as client:
        response = https_get(client, address, domain, path)
    assert response.status_code == 200, response.text[:300]
    assert response.content == body_for("customer-a", base_path + path, 1024)
    assert host.check_output("systemctl show -p MainPID --value cdnctl-nginx") == master
