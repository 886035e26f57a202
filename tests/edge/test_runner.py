"""The helpers tests and benchmarks start servers with."""

from __future__ import annotations

import socket

from cdnctl.edge.runner import free_port


def test_free_port_gives_a_port_once_and_an_unbound_one():
    """Ports given before any server binds them are all different (the kernel offers a
    port it just released again), and each can be bound on 127.0.0.1."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))
