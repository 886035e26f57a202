"""HTTPS on the edge: tenant certificates by SNI from the admin API, the default
certificate, HTTP -> HTTPS redirects, ACME HTTP-01 tokens; never an nginx reload."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.pki import key_pem, new_key, self_signed_pem
from cdnctl.edge.runner import free_port
from cdnctl.tenants.canonical import canonical_json, sha256_tag
from tests.edge.conftest import Node

pytestmark = pytest.mark.integration


class CertAuthority:
    """A CA for the tenant certificates of these tests."""

    def __init__(self, directory: Path) -> None:
        self.key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdnctl test CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(self.key, hashes.SHA256())
        )
        self.file = directory / "ca.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, names: list[str], days: float = 10, expired: bool = False) -> dict[str, str]:
        """{"cert", "key"} PEM of a leaf for `names` (chain: leaf + this CA)."""
        key = new_key()
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=3 if expired else 1)
        end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=days)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(
            serialization.Encoding.PEM
        )
        return {"cert": chain.decode(), "key": key_pem(key).decode()}

    def verifying_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.file))


@pytest.fixture
def ca(tmp_path: Path) -> CertAuthority:
    return CertAuthority(tmp_path)


@pytest.fixture
def tls_node(make_node: Callable[..., Node]) -> Node:
    return make_node("edge", https_listen=f"127.0.0.1:{free_port()}")


def https_address(node: Node) -> tuple[str, int]:
    host, _, port = str(node.edge.settings.https_listen).rpartition(":")
    return host, int(port)


def leaf_der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )


class Handshake(NamedTuple):
    der: bytes  # the leaf the node presented
    version: str | None
    alpn: str | None


def served(node: Node, server_name: str | None, **options: Any) -> Handshake:
    """What the node presents for `server_name` (no verification)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if "version" in options:
        context.minimum_version = context.maximum_version = options["version"]
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(https_address(node), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return Handshake(der, tls.version(), tls.selected_alpn_protocol())


def set_certs(node: Node, *items: dict[str, Any], remove: list[str] | None = None) -> Any:
    return node.admin.post("/certificates", json={"set": list(items), "remove": remove or []})


def default_der(node: Node) -> bytes:
    return leaf_der(node.edge.settings.default_cert_path.read_text())


def test_sni_picks_the_tenant_certificate_and_unknown_names_get_the_default(
    tls_node: Node, ca: CertAuthority
) -> None:
    cert = ca.issue(["www.shop.test", "*.img.shop.test"])
    response = set_certs(tls_node, {"tenant": "shop", **cert})
    assert response.status_code == 200, response.text
    assert response.json() == {"set": 1, "removed": 0, "certificates": 1}

    for name in ("www.shop.test", "WWW.Shop.test", "a.img.shop.test"):
        context = ca.verifying_context()
        with (
            socket.create_connection(https_address(tls_node), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=name.lower()) as tls,
        ):
            assert tls.getpeercert(binary_form=True) == leaf_der(cert["cert"])
    assert served(tls_node, "WWW.Shop.test").der == leaf_der(cert["cert"])
    # Not covered (the wildcard is one label deep), no SNI at all: the default certificate.
    for name in ("other.test", "a.b.img.shop.test", "img.shop.test", None):
        assert served(tls_node, name).der == default_der(tls_node)

    for version, label in (
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
        (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    ):
        handshake = served(tls_node, "www.shop.test", version=version)
        assert handshake.der == leaf_der(cert["cert"])
        assert handshake.version == label
    assert served(tls_node, "www.shop.test").alpn == "h2"


def test_https_serves_the_tenant_over_http2_and_redirects_plain_http(
    tls_node: Node, ca: CertAuthority, make_origin: Callable[..., Any]
) -> None:
    origin = make_origin("shop")
    redirecting = tenant("shop", ["www.shop.test"], origin.address)
    redirecting["tls"]["redirect_http"] = True
    redirecting["digest"] = sha256_tag(
        canonical_json({k: v for k, v in redirecting.items() if k != "digest"})
    )
    plain = tenant("blog", ["blog.test"], origin.address)
    assert tls_node.apply(make_bundle(redirecting, plain)).status_code == 200
    assert set_certs(tls_node, {"tenant": "shop", **ca.issue(["www.shop.test"])}).status_code == 200

    host, port = https_address(tls_node)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--cacert",
            str(ca.file),
            "--resolve",
            f"www.shop.test:{port}:{host}",
            "-w",
            "\\n%{http_version} %{http_code}",
            f"https://www.shop.test:{port}/hello.txt",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    body, _, status = result.stdout.rpartition("\n")
    assert status == "2 200"
    assert "shop" in body

    response = tls_node.get("www.shop.test", "/a/b?x=1")
    assert response.status_code == 301
    assert response.headers["location"] == f"https://www.shop.test:{port}/a/b?x=1"
    assert tls_node.request("POST", "www.shop.test", "/form").status_code == 308
    # A tenant without redirect_http keeps serving plain HTTP.
    assert tls_node.get("blog.test", "/hello.txt").status_code == 200

    # ACME challenges stay on plain HTTP, redirect or not.
    assert (
        tls_node.admin.post(
            "/acme-challenges", json={"set": {"tok-1_A": "tok-1_A.thumb"}}
        ).status_code
        == 200
    )
    challenge = tls_node.get("www.shop.test", "/.well-known/acme-challenge/tok-1_A")
    assert challenge.status_code == 200
    assert challenge.text == "tok-1_A.thumb"


def test_certificates_change_under_concurrent_handshakes_without_failures_or_reload(
    tls_node: Node, ca: CertAuthority
) -> None:
    versions = [ca.issue(["live.test"]) for _ in range(4)]
    allowed = {leaf_der(v["cert"]) for v in versions} | {default_der(tls_node)}
    master, workers = tls_node.edge.master_pid, tls_node.edge.worker_pids()
    stop = threading.Event()
    seen: set[bytes] = set()
    failures: list[str] = []
    handshakes = [0]
    lock = threading.Lock()

    def client() -> None:
        # Bounded: at most 3000 handshakes per thread, whatever the main thread does.
        for _ in range(3000):
            if stop.is_set():
                return
            try:
                der = served(tls_node, "live.test").der
            except (OSError, ssl.SSLError) as exc:
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                seen.add(der)
                handshakes[0] += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()

    def handshakes_beyond(count: int) -> None:
        while handshakes[0] < count and any(t.is_alive() for t in threads):
            stop.wait(0.01)

    try:
        handshakes_beyond(50)
        for _ in range(5):
            for version in versions:  # add, then replace three times
                assert set_certs(tls_node, {"tenant": "live", **version}).status_code == 200
                handshakes_beyond(handshakes[0] + 5)
            assert set_certs(tls_node, remove=["live"]).status_code == 200
            handshakes_beyond(handshakes[0] + 5)
        assert set_certs(tls_node, {"tenant": "live", **versions[0]}).status_code == 200
        handshakes_beyond(handshakes[0] + 50)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert handshakes[0] >= 200
    assert seen <= allowed
    assert len(seen) > 1
    assert served(tls_node, "live.test").der == leaf_der(versions[0]["cert"])
    assert tls_node.edge.master_pid == master
    assert tls_node.edge.worker_pids() == workers


def test_a_bad_change_is_refused_whole_and_changes_nothing(
    tls_node: Node, ca: CertAuthority
) -> None:
    good = ca.issue(["a.test"])
    assert set_certs(tls_node, {"tenant": "a", **good}).status_code == 200
    before = tls_node.admin.get("/certificates").json()
    other_key = ca.issue(["b.test"])["key"]
    own_cert, own_key = self_signed_pem(["c.test"], days=1)
    cases = [
        (
            {"tenant": "b", "cert": ca.issue(["b.test"])["cert"], "key": other_key},
            400,
            "does not match",
        ),
        ({"tenant": "b", **ca.issue(["b.test"], expired=True)}, 400, "expired"),
        ({"tenant": "b", "cert": "not pem", "key": own_key.decode()}, 400, "cert"),
        ({"tenant": "B/..", "cert": own_cert.decode(), "key": own_key.decode()}, 400, "tenant"),
        ({"tenant": "b", **ca.issue(["a.test"])}, 409, "a.test"),
    ]
    for bad, status, words in cases:
        # The valid item first: nothing of a request goes live unless all of it is valid.
        response = set_certs(
            tls_node, {"tenant": "c", "cert": own_cert.decode(), "key": own_key.decode()}, bad
        )
        assert response.status_code == status, response.text
        assert words in response.json()["error"]
        assert tls_node.admin.get("/certificates").json() == before
    assert served(tls_node, "c.test").der == default_der(tls_node)
    assert served(tls_node, "a.test").der == leaf_der(good["cert"])
    assert tls_node.admin.post("/certificates", content=b"[1").status_code == 400
    assert (
        tls_node.client.post(
            tls_node.edge.admin_url + "/certificates", json={"set": []}
        ).status_code
        == 401
    )


def test_certificates_survive_a_restart_in_private_files(
    make_node: Callable[..., Node], ca: CertAuthority
) -> None:
    https = f"127.0.0.1:{free_port()}"
    node = make_node("edge", https_listen=https)
    first, keep, gone = ca.issue(["keep.test"]), ca.issue(["keep.test"]), ca.issue(["gone.test"])
    assert (
        set_certs(node, {"tenant": "keep", **first}, {"tenant": "gone", **gone}).status_code == 200
    )
    # Replaced and removed: their old files go once the new index is written.
    assert set_certs(node, {"tenant": "keep", **keep}, remove=["gone"]).status_code == 200
    state = node.edge.settings.effective_state_dir
    files = sorted(p.name for p in state.glob("cert*"))
    fingerprint = node.admin.get("/certificates").json()["certificates"]["keep"]["fingerprint"]
    assert files == [f"cert-keep-{fingerprint[:16]}.json", "certs.index.json"]
    for name in files:
        assert (state / name).stat().st_mode & 0o777 == 0o600
    listing = node.admin.get("/certificates").json()
    node.edge.stop()
    node.edge.start()
    assert node.admin.get("/certificates").json() == listing
    assert served(node, "keep.test").der == leaf_der(keep["cert"])
    assert served(node, "gone.test").der == default_der(node)
    assert 'cdn_certificate_expiry_timestamp_seconds{tenant="keep"} ' in node.metrics()


def test_expiry_metric_per_tenant(tls_node: Node, ca: CertAuthority) -> None:
    cert = ca.issue(["m.test"], days=5)
    assert set_certs(tls_node, {"tenant": "m", **cert}).status_code == 200
    not_after = x509.load_pem_x509_certificate(cert["cert"].encode()).not_valid_after_utc
    line = f'cdn_certificate_expiry_timestamp_seconds{{tenant="m"}} {int(not_after.timestamp())}'
    assert line in tls_node.metrics().splitlines()


def test_acme_challenge_tokens(tls_node: Node) -> None:
    publish = tls_node.admin.post(
        "/acme-challenges", json={"set": {"abc": "abc.thumb", "def": "def.thumb"}, "ttl": 60}
    )
    assert publish.json() == {"set": 2, "removed": 0}
    for host in ("any.test", "unknown-host.test"):
        response = tls_node.get(host, "/.well-known/acme-challenge/abc")
        assert (response.status_code, response.text) == (200, "abc.thumb")
    assert tls_node.get("x.test", "/.well-known/acme-challenge/nope").status_code == 404
    assert tls_node.get("x.test", "/.well-known/acme-challenge/a%2Fb").status_code == 404
    for bad in ({"set": {"a b": "a b.x"}}, {"set": {"abc": "other.thumb"}}, {"ttl": 0}):
        assert tls_node.admin.post("/acme-challenges", json=bad).status_code == 400
    assert tls_node.admin.post("/acme-challenges", json={"remove": ["abc"]}).status_code == 200
    assert tls_node.get("x.test", "/.well-known/acme-challenge/abc").status_code == 404
    assert tls_node.get("x.test", "/.well-known/acme-challenge/def").text == "def.thumb"
    assert (
        tls_node.client.post(
            tls_node.edge.admin_url + "/acme-challenges", json={"set": {}}
        ).status_code
        == 401
    )
    assert os.path.exists(tls_node.edge.settings.default_key_path)
    assert tls_node.edge.settings.default_key_path.stat().st_mode & 0o777 == 0o600
