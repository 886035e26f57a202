"""Fixtures for data-plane tests: real nginx nodes and sample origins on 127.0.0.1.

Every server started here is stopped at fixture teardown.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdnctl.bundle.synthetic import bundle_bytes
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode, free_port
from cdnctl.lab.sample_origin import SampleOrigin

ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Node:
    """A running edge/shield node plus small client helpers."""

    def __init__(self, edge: EdgeNode) -> None:
        self.edge = edge
        self.client = httpx.Client(base_url=edge.base_url, timeout=10)
        self.admin = httpx.Client(base_url=edge.admin_url, timeout=60, headers=AUTH)

    @property
    def address(self) -> str:
        return self.edge.settings.listen

    def get(self, host: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Host": host, **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def request(self, method: str, host: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Host": host, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def apply(self, bundle: dict[str, Any], commit: str | None = None) -> httpx.Response:
        headers = {"X-Cdnctl-Commit": commit} if commit else {}
        response = self.admin.post("/config", content=bundle_bytes(bundle), headers=headers)
        return response

    def purge(self, body: dict[str, Any], token: str = ADMIN_TOKEN) -> httpx.Response:
        return self.admin.post("/purge", json=body, headers={"Authorization": f"Bearer {token}"})

    def metrics(self) -> str:
        return self.admin.get("/metrics").text

    def close(self) -> None:
        self.client.close()
        self.admin.close()
        self.edge.stop()


def raw_request(address: str, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection and return everything read until close."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def make_origin() -> Iterator[Callable[..., SampleOrigin]]:
    started: list[SampleOrigin] = []

    def make(tenant: str = "origin", **kwargs: Any) -> SampleOrigin:
        origin = SampleOrigin(tenant=tenant, **kwargs).start()
        started.append(origin)
        return origin

    yield make
    for origin in started:
        origin.stop()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def make(name: str = "edge", **settings: Any) -> Node:
        settings.setdefault("workers", 2)
        node_settings = NodeSettings(
            prefix=tmp_path / name,
            listen=settings.pop("listen", f"127.0.0.1:{free_port()}"),
            admin_listen=settings.pop("admin_listen", f"127.0.0.1:{free_port()}"),
            admin_token=ADMIN_TOKEN,
            **settings,
        )
        node = Node(EdgeNode(node_settings).start())
        started.append(node)
        return node

    yield make
    for node in started:
        node.close()


@pytest.fixture
def edge(make_node: Callable[..., Node]) -> Node:
    return make_node("edge")
