"""Run cdnctl's sample origin (sample_origin.py, copied next to this file) on a lab host.

Settings come from the environment (a systemd EnvironmentFile): LAB_ORIGIN_TENANT,
LAB_ORIGIN_LISTEN (ADDRESS:PORT) and optional LAB_ORIGIN_BASIC_AUTH (USER:PASSWORD). Every
request is logged to stdout (the journal) as `METHOD PATH auth|noauth`, so tests can count
what reached the origin.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler

# Run as a script, Python puts this file's directory (with sample_origin.py) on sys.path.
from sample_origin import SampleOrigin


class LabOrigin(SampleOrigin):
    def __init__(self, tenant: str, host: str, port: int, basic_auth: tuple[str, str] | None):
        # SampleOrigin refuses non-loopback addresses (a guard for tests on shared machines);
        # a lab origin is a dedicated test host that edges reach over the network.
        super().__init__(tenant=tenant, host="127.0.0.1", port=port, basic_auth=basic_auth)
        self.host = host

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        super().record(handler)
        auth = "auth" if handler.headers.get("Authorization") else "noauth"
        print(f"{handler.command} {handler.path} {auth}", flush=True)


def main() -> None:
    host, _, port = os.environ["LAB_ORIGIN_LISTEN"].rpartition(":")
    credentials = os.environ.get("LAB_ORIGIN_BASIC_AUTH")
    user, _, password = (credentials or "").partition(":")
    origin = LabOrigin(
        os.environ["LAB_ORIGIN_TENANT"], host, int(port), (user, password) if credentials else None
    )
    origin.start()
    print(f"sample origin for {origin.tenant} on {origin.address}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
