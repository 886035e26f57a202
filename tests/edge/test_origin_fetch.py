"""Origin fetch details: HTTPS with SNI and verification, DNS resolution with caching."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import dns.message
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.lab.sample_origin import body_for

pytestmark = pytest.mark.integration


def issue(tmp: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA (written to ca.pem) and a server context for `name` signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cdnctl test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    return ca_file, context


def tls_origin_and_edge(tmp_path, make_node, make_origin, workers: int = 2):
    """An HTTPS origin with a certificate for origin.tls.test only, reachable as
    origin.tls.test and other.tls.test, and an edge serving three tenants from it: good
    (origin.tls.test), bad (other.tls.test, verified) and lax (other.tls.test, unverified)."""
    ca_file, context = issue(tmp_path, "origin.tls.test")
    origin = make_origin("tls", tls=context)
    edge = make_node(
        "edge",
        workers=workers,
        trusted_ca=ca_file,
        resolve={"origin.tls.test": "127.0.0.1", "other.tls.test": "127.0.0.1"},
    )
    bundle = make_bundle(
        tenant("good", ["good.test"], f"origin.tls.test:{origin.port}", scheme="https"),
        tenant("bad", ["bad.test"], f"other.tls.test:{origin.port}", scheme="https"),
        tenant(
            "lax",
            ["lax.test"],
            f"other.tls.test:{origin.port}",
            scheme="https",
            tls_verify=False,
        ),
    )
    assert edge.apply(bundle).status_code == 200
    return origin, edge


def test_https_origin_with_sni_and_verification(tmp_path, make_node, make_origin):
    origin, edge = tls_origin_and_edge(tmp_path, make_node, make_origin)
    response = edge.get("good.test", "/s")
    assert response.status_code == 200
    assert response.content == body_for("tls", "/s", 1024)
    assert "origin.tls.test" in origin.sni_seen
    # Certificate does not match other.tls.test: refused when verifying, allowed when not.
    assert edge.get("bad.test", "/s").status_code == 502
    assert origin.count("/s") == 1
    assert edge.get("lax.test", "/s").status_code == 200
    assert "other.tls.test" in origin.sni_seen


class StubDNS:
    """A UDP DNS server on 127.0.0.1 answering A queries from a dict; counts queries."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text().rstrip(".")
            self.queries.append(name)
            reply = dns.message.make_response(query)
            if name in self.records:
                reply.answer.append(
                    dns.rrset.from_text(name + ".", 60, "IN", "A", self.records[name])
                )
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(reply.to_wire(), peer)

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def test_origin_hostname_resolved_by_dns_and_cached(make_node, make_origin):
    origin = make_origin("dns")
    stub = StubDNS({"origin.dns.test": "127.0.0.1"})
    try:
        edge = make_node("edge", resolvers=[f"127.0.0.1:{stub.port}"], workers=1)
        bundle = make_bundle(
            tenant("d", ["d.test"], f"origin.dns.test:{origin.port}"),
            tenant("n", ["n.test"], f"missing.dns.test:{origin.port}"),
        )
        assert edge.apply(bundle).status_code == 200
        assert edge.get("d.test", "/1").content == body_for("dns", "/1", 1024)
        assert edge.get("d.test", "/2").status_code == 200
        assert stub.queries.count("origin.dns.test") == 1
        assert edge.get("n.test", "/1").status_code == 502
    finally:
        stub.stop()


def test_https_origin_connections_are_pooled_per_tls_identity(tmp_path, make_node, make_origin):
    origin, edge = tls_origin_and_edge(tmp_path, make_node, make_origin, workers=1)
    for n in range(3):
        assert edge.get("good.test", f"/miss-{n}").status_code == 200
    assert origin.sni_seen == ["origin.tls.test"]  # one handshake for three misses
    # Another name on the same address never gets a connection verified for the first.
    for n in range(2):
        assert edge.get("lax.test", f"/miss-{n}").status_code == 200
    assert origin.sni_seen == ["origin.tls.test", "other.tls.test", "other.tls.test"]
    assert edge.get("good.test", "/miss-3").status_code == 200
    assert origin.sni_seen.count("origin.tls.test") == 1
