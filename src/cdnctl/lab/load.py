"""A bounded load generator that reaches the lab the way a real client does.

For every request it resolves the tenant's name again through its region's DNS host (with
an ECS subnet of the region: GeoDNS picks a healthy, undrained edge of that region), opens a
new HTTPS connection to the address it got (SNI, pebble's root) and fetches an object. Run
during a rolling upgrade it counts what a client would see fail: a DNS answer with no edge, a
refused or reset connection, a TLS error, any status but 200. It stops by itself at
`max_seconds` or `max_requests`, or when `stop` is set.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from cdnctl.lab.smoke import LabView, SampleTenant, https_get, resolve


@dataclass
class LoadReport:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)  # edge address -> requests
    seconds: float = 0.0
    slowest: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "failed": len(self.failures),
            "first_failures": self.failures[:10],
            "served_by": dict(sorted(self.served_by.items())),
            "seconds": round(self.seconds, 1),
            "slowest_s": round(self.slowest, 3),
        }


def _one(
    region_dns: str,
    subnet: str,
    tenant: SampleTenant,
    path: str,
    context: ssl.SSLContext,
) -> tuple[str | None, str | None]:
    """(edge address, failure) of one request: resolve, connect anew, GET."""
    try:
        answers = resolve(region_dns, tenant.name, subnet)
    except Exception as exc:  # a timeout or a refusal is what the client sees: count it
        return None, f"DNS {region_dns} {tenant.name}: {type(exc).__name__}: {exc}"
    if not answers:
        return None, f"DNS {region_dns} {tenant.name}: no address"
    address = answers[0]
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection every time
    try:
        with httpx.Client(verify=context, timeout=10, limits=limits) as client:
            response = https_get(client, address, tenant.name, path)
    except httpx.HTTPError as exc:
        return address, f"{tenant.name} via {address}: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return address, f"{tenant.name} via {address}: HTTP {response.status_code}"
    return address, None


def run_load(
    view: LabView,
    tenants: list[SampleTenant],
    root_pem: str,
    stop: threading.Event,
    *,
    max_seconds: float,
    max_requests: int,
    workers: int = 2,
    pause: float = 0.02,
) -> LoadReport:
    """Requests from `workers` threads, round-robin over every (region, tenant), until one
    of the bounds; the report of all of them."""
    context = ssl.create_default_context(cadata=root_pem)
    targets = [
        (next(iter(region.dns.values())), region.client_network, tenant, region.name)
        for region in view.regions
        if region.dns
        for tenant in tenants
    ]
    if not targets:
        raise ValueError("no region with a DNS host, or no tenant: nothing to load")
    report = LoadReport()
    lock = threading.Lock()
    counter = itertools.count()
    start = time.monotonic()
    deadline = start + max_seconds

    def worker() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            n = next(counter)
            if n >= max_requests:
                return
            dns_server, subnet, tenant, region = targets[n % len(targets)]
            began = time.monotonic()
            address, failure = _one(
                dns_server, subnet, tenant, f"/lab-load/{region}/{tenant.id}.bin", context
            )
            took = time.monotonic() - began
            with lock:
                report.requests += 1
                report.slowest = max(report.slowest, took)
                if address:
                    report.served_by[address] += 1
                if failure:
                    report.failures.append(failure)
            time.sleep(pause)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - start
    return report
