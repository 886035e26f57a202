"""A real pebble (Debian's ACME test server) on 127.0.0.1 for the certificate tests.

pebble resolves names through pebble-challtestsrv (same Debian package), a DNS server on
127.0.0.1 answering every A query with 127.0.0.1, where the test edges listen: HTTP-01
validation is real, against the token the edges serve from their shared dict.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from cdnctl.edge.pki import key_pem, new_key
from cdnctl.edge.runner import free_port
from tests.edge.conftest import Node


@dataclass
class Pebble:
    directory_url: str
    listener_ca: Path
    management_url: str

    def issuing_root(self) -> str:
        context = ssl.create_default_context(cafile=str(self.listener_ca))
        return httpx.get(f"{self.management_url}/roots/0", verify=context).text


def _listener_certificate(directory: Path) -> tuple[Path, Path]:
    """pebble's own TLS listener: a self-signed certificate for 127.0.0.1."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "listener.pem", directory / "listener.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key_pem(key))
    return cert_file, key_file


def _wait_for(
    url: str, verify: ssl.SSLContext, process: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(200):  # bounded: 10 s
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, verify=verify, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready: {log.read_text()[-2000:]}")


@pytest.fixture
def make_pebble(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    if not shutil.which("pebble"):
        pytest.fail("pebble is not installed: run `make setup` (Debian package pebble)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(http_port: int, dns_server: str | None = None) -> Pebble:
        """pebble sending HTTP-01 checks to http_port; it resolves through dns_server
        (HOST:PORT, e.g. a real gdnsd) when given, else through pebble-challtestsrv."""
        directory = tmp_path / "pebble"
        directory.mkdir()
        cert_file, key_file = _listener_certificate(directory)
        dns_port = free_port()
        log = directory / "pebble.log"
        with log.open("ab") as out:
            if dns_server is None:
                dns_server = f"127.0.0.1:{dns_port}"
                processes.append(
                    subprocess.Popen(
                        [
                            "pebble-challtestsrv",
                            "-dns01",
                            f"127.0.0.1:{dns_port}",
                            "-http01",
                            "",
                            "-https01",
                            "",
                            "-tlsalpn01",
                            "",
                            "-management",
                            f"127.0.0.1:{free_port()}",
                            "-defaultIPv4",
                            "127.0.0.1",
                            "-defaultIPv6",
                            "",
                        ],
                        stdout=out,
                        stderr=out,
                    )
                )
            listen, management = free_port(), free_port()
            config = {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{listen}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert_file),
                    "privateKey": str(key_file),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
            (directory / "pebble.json").write_text(json.dumps(config))
            env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
            processes.append(
                subprocess.Popen(
                    [
                        "pebble",
                        "-config",
                        str(directory / "pebble.json"),
                        "-dnsserver",
                        dns_server,
                    ],
                    stdout=out,
                    stderr=out,
                    env=env,
                )
            )
        pebble = Pebble(
            f"https://127.0.0.1:{listen}/dir", cert_file, f"https://127.0.0.1:{management}"
        )
        context = ssl.create_default_context(cafile=str(cert_file))
        _wait_for(pebble.directory_url, context, processes[-1], log)
        return pebble

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def verified_leaf(node: Node, name: str, root_pem: str) -> x509.Certificate:
    """The leaf the node serves for `name`, verified against pebble's issuing root."""
    context = ssl.create_default_context(cadata=root_pem)
    host, _, port = str(node.edge.settings.https_listen).rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
