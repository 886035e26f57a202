"""The multi-region lab's smoke test: what a client of each region sees.

For every region and every sample tenant: ask that region's DNS host for the tenant's name
with an EDNS Client Subnet of the region (as a resolver of a client there would), check the
answer is an edge of the region, fetch a fresh object over HTTPS from the edge it returned
(SNI and Host the tenant's name, verified against the lab pebble's issuing root): MISS,
then HIT; fetch it once more through the region's other edges (HIT on their side too, MISS
only on their first) and count, on the origin, how many fetches reached it: one per region
behind its shield, one per edge without. Then every Prometheus target of every region up.
The lab's CLI step and tests/lab both run it; every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx

from cdnctl.fleet.targets import inventory_json

ORIGIN_UNIT = "cdnctl-lab-origin@{tenant}"
PROMETHEUS_PORT = 9090
PEBBLE_MANAGEMENT_PORT = 15000


@dataclass(frozen=True)
class Region:
    name: str
    client_network: str  # the first IPv4 network the region serves (the ECS subnet asked)
    dns: dict[str, str]  # host -> address
    edges: dict[str, str]
    shields: dict[str, str]
    prometheus: dict[str, str]


@dataclass(frozen=True)
class LabView:
    """What the smoke test (and the summary) need of the lab's inventory."""

    domain: str
    regions: tuple[Region, ...]
    origin: str | None  # the sample origins' host (container name)
    acme: str | None  # the pebble host's address
    hosts: tuple[tuple[str, str, str, str], ...] = ()  # (region, host, role, address)

    @property
    def dns_hosts(self) -> dict[str, str]:
        return {h: a for r in self.regions for h, a in r.dns.items()}


def lab_view(inventory: Path) -> LabView:
    data = inventory_json(inventory)
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})

    def members(group: str, region: str | None = None) -> dict[str, str]:
        return {
            host: str(hostvars[host]["cdn_private_address"])
            for host in sorted(data.get(group, {}).get("hosts", []))
            if region is None or hostvars[host].get("cdn_region") == region
        }

    first = hostvars[min(hostvars)] if hostvars else {}
    regions = []
    for name, spec in (first.get("cdn_regions") or {}).items():
        v4 = [n for n in spec.get("client_networks", []) if ipaddress.ip_network(n).version == 4]
        if not v4:
            raise ValueError(f"region {name}: no IPv4 client network to ask GeoDNS with")
        regions.append(
            Region(
                name,
                v4[0],
                members("dns", name),
                members("edge", name),
                members("shield", name),
                members("prometheus", name),
            )
        )
    origins = sorted(data.get("origin", {}).get("hosts", []))
    acme = members("acme")
    hosts = sorted(
        (
            str(v.get("cdn_region", "")),
            host,
            str(v.get("cdn_role", "")),
            str(v.get("cdn_private_address", "")),
        )
        for host, v in hostvars.items()
    )
    return LabView(
        str(first.get("cdn_domain", "")),
        tuple(regions),
        origins[0] if origins else None,
        next(iter(acme.values()), None),
        tuple(hosts),
    )


@dataclass(frozen=True)
class SampleTenant:
    id: str
    name: str  # the (non-wildcard) name clients use
    shielded: bool
    base_path: str = ""


def sample_tenants(tenants: Mapping[str, Mapping[str, Any]]) -> list[SampleTenant]:
    """From a compiled bundle's effective tenants: one concrete name each."""
    out = []
    for tenant_id in sorted(tenants):
        t = tenants[tenant_id]
        names = [d for d in t["domains"] if not d.startswith("*.")]
        if names:
            origin = t.get("origin") or {}
            base = origin.get("base_path", "") if isinstance(origin, dict) else ""
            out.append(SampleTenant(tenant_id, names[0], t.get("shield") is not False, base))
    return out


@dataclass
class Check:
    region: str
    what: str
    ok: bool
    detail: str = ""


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def resolve(server: str, name: str, subnet: str, timeout: float = 3.0) -> list[str]:
    """The A records `server` gives `name` for a client in `subnet` (ECS)."""
    network = ipaddress.ip_network(subnet)
    option = dns.edns.ECSOption(str(network.network_address), network.prefixlen)
    query = dns.message.make_query(name, "A", use_edns=0, options=[option])
    answer = dns.query.udp(query, server, timeout=timeout)
    return sorted(
        r.address for rrset in answer.answer for r in rrset if r.rdtype == dns.rdatatype.A
    )


def pebble_root(acme_address: str, listener_ca: Path) -> str:
    """The issuing root of the lab's pebble (new at each pebble start)."""
    response = httpx.get(
        f"https://{acme_address}:{PEBBLE_MANAGEMENT_PORT}/roots/0",
        verify=ssl.create_default_context(cafile=str(listener_ca)),
        timeout=10,
    )
    response.raise_for_status()
    return response.text


def https_get(client: httpx.Client, address: str, name: str, path: str) -> httpx.Response:
    request = client.build_request(
        "GET", f"https://{address}{path}", headers={"Host": name}, extensions={"sni_hostname": name}
    )
    return client.send(request)


def origin_fetches(origin_host: str, tenant: str, path: str) -> int:
    """How many requests for `path` reached the tenant's sample origin (its journal)."""
    unit = ORIGIN_UNIT.format(tenant=tenant)
    done = subprocess.run(
        ["podman", "exec", origin_host, "journalctl", "-u", unit, "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return sum(1 for line in done.stdout.splitlines() if line.startswith(f"GET {path} "))


def _tenant_in_region(
    region: Region,
    tenant: SampleTenant,
    root_pem: str,
    origin_host: str | None,
    run: str,
    report: SmokeReport,
) -> None:
    path = f"/lab-smoke/{run}/{region.name}/{tenant.id}.bin"
    answers: dict[str, list[str]] = {}
    for host, address in region.dns.items():
        try:
            answers[host] = resolve(address, tenant.name, region.client_network)
        except Exception as exc:  # timeouts, refused: the check says which host
            answers[host] = [f"error: {type(exc).__name__}: {exc}"]
    edge_addresses = set(region.edges.values())
    good = all(a and set(a) <= edge_addresses for a in answers.values())
    report.checks.append(
        Check(
            region.name,
            f"{tenant.name}: GeoDNS sends {region.client_network} to a {region.name} edge",
            good,
            "; ".join(f"{h}: {', '.join(a) or 'no answer'}" for h, a in answers.items()),
        )
    )
    first = next((a[0] for a in answers.values() if a and a[0] in edge_addresses), None)
    if first is None:
        return
    others = [a for a in sorted(edge_addresses) if a != first]
    statuses: list[str] = []
    detail = ""
    try:
        with httpx.Client(verify=ssl.create_default_context(cadata=root_pem), timeout=15) as client:
            for address in (first, first, *others):
                response = https_get(client, address, tenant.name, path)
                statuses.append(
                    f"{address}:{response.status_code}:{response.headers.get('X-Cache-Status')}"
                )
                if response.status_code != 200:
                    detail = response.text[:200]
                    break
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {exc}"
    wanted = [f"{first}:200:MISS", f"{first}:200:HIT"] + [f"{a}:200:MISS" for a in others]
    report.checks.append(
        Check(
            region.name,
            f"{tenant.name} over HTTPS via {first}: MISS, then HIT",
            statuses == wanted,
            detail or ", ".join(statuses),
        )
    )
    if origin_host is None or statuses != wanted:
        return
    expected = 1 if tenant.shielded and region.shields else 1 + len(others)
    seen = origin_fetches(origin_host, tenant.id, tenant.base_path + path)
    behind = "its shield" if tenant.shielded and region.shields else "no shield: one per edge"
    report.checks.append(
        Check(
            region.name,
            f"{tenant.name}: {expected} origin fetch(es) for {len(region.edges)} edges ({behind})",
            seen == expected,
            f"origin saw {seen}",
        )
    )


def prometheus_targets(address: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    response = httpx.get(
        f"http://{address}:{PROMETHEUS_PORT}/api/v1/targets",
        params={"state": "active"},
        timeout=timeout,
    )
    response.raise_for_status()
    return response.json()["data"]["activeTargets"]


def _target(target: Mapping[str, Any]) -> str:
    labels = target["labels"]
    why = target.get("lastError") or target["health"]
    return f"{labels.get('job')}/{labels.get('host')}: {why}"


def _prometheus(region: Region, report: SmokeReport, wait: float) -> None:
    for host, address in region.prometheus.items():
        deadline = time.monotonic() + wait
        down: list[str] = []
        count = 0
        while True:
            try:
                targets = prometheus_targets(address)
                count = len(targets)
                down = [_target(t) for t in targets if t["health"] != "up"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                down = [f"{type(exc).__name__}: {exc}"]
            if (count and not down) or time.monotonic() > deadline:
                break
            time.sleep(3)
        report.checks.append(
            Check(
                region.name,
                f"Prometheus {host}: every target up",
                bool(count) and not down,
                "; ".join(down) if down else f"{count} targets up",
            )
        )


def smoke(
    view: LabView,
    tenants: list[SampleTenant],
    root_pem: str,
    *,
    prometheus_wait: float = 90.0,
    echo: Callable[[str], None] = lambda _: None,
) -> SmokeReport:
    start = time.monotonic()
    report = SmokeReport()
    run = uuid.uuid4().hex[:10]
    for region in view.regions:
        for tenant in tenants:
            echo(f"smoke: {region.name}: {tenant.name}")
            _tenant_in_region(region, tenant, root_pem, view.origin, run, report)
        _prometheus(region, report, prometheus_wait)
    report.seconds = time.monotonic() - start
    return report
