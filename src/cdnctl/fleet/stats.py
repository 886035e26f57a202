"""What `cdnctl stats` shows: per tenant and per region figures from the regions' Prometheus.

Every figure is a recording rule of templates/prometheus/rules.yml.j2 (5-minute rates), read
with one instant query per figure from each Prometheus (one per region), plus a range query
for the request-rate history each tenant's sparkline draws. A Prometheus that does not answer
is reported, and the others are still shown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cdnctl.fleet.targets import host_url, inventory_json

DEFAULT_PROMETHEUS_PORT = 9090
UNKNOWN_TENANT = "_unknown"  # requests for hosts no tenant serves: not a tenant
SPARK = "▁▂▃▄▅▆▇█"

TENANT_FIGURES = {
    "requests_per_second": "tenant_region:cdn_requests:rate5m",
    "hit_ratio": "tenant_region:cdn_cache_hit:ratio_rate5m",
    "bytes_per_second": "tenant_region:cdn_response_bytes:rate5m",
    "error_ratio_5xx": "tenant_region:cdn_requests_5xx:ratio_rate5m",
    "origin_p95_seconds": "tenant_region:cdn_origin_response_seconds:p95_rate5m",
}
REGION_FIGURES = {
    "requests_per_second": "region:cdn_requests:rate5m",
    "hit_ratio": "region:cdn_cache_hit:ratio_rate5m",
    "bytes_per_second": "region:cdn_response_bytes:rate5m",
    "error_ratio_5xx": "region:cdn_requests_5xx:ratio_rate5m",
    "origin_p95_seconds": "region:cdn_origin_response_seconds:p95_rate5m",
    "active_tenants": "region:cdn_active_tenants:count",
}


@dataclass
class TenantStats:
    tenant: str
    region: str
    requests_per_second: float | None = None
    hit_ratio: float | None = None
    bytes_per_second: float | None = None
    error_ratio_5xx: float | None = None
    origin_p95_seconds: float | None = None
    # Requests/s over the last minutes, oldest first (one point per step).
    history: list[float] = field(default_factory=list)


@dataclass
class RegionStats:
    region: str
    requests_per_second: float | None = None
    hit_ratio: float | None = None
    bytes_per_second: float | None = None
    error_ratio_5xx: float | None = None
    origin_p95_seconds: float | None = None
    active_tenants: float | None = None


@dataclass
class Snapshot:
    tenants: list[TenantStats]
    regions: list[RegionStats]
    # Prometheus URL -> why it gave nothing.
    errors: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class PrometheusError(RuntimeError):
    """A Prometheus did not answer a query (the message names it and says why)."""


def _number(raw: str) -> float | None:
    value = float(raw)
    return None if math.isnan(value) or math.isinf(value) else value


def _selector(tenant: str | None, region: str | None) -> str:
    matchers = [f'tenant!="{UNKNOWN_TENANT}"'] if tenant is None else [f'tenant="{tenant}"']
    if region is not None:
        matchers.append(f'region="{region}"')
    return "{" + ", ".join(matchers) + "}"


def _region_selector(region: str | None) -> str:
    return "" if region is None else f'{{region="{region}"}}'


class Prometheus:
    """The HTTP API of one Prometheus."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self.client = client

    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = self.client.get(f"{self.url}{path}", params=params)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusError(f"{self.url}: {exc}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: {body.get('error') or response.status_code}")
        return body["data"]["result"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": expr})

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[dict[str, Any]]:
        return self._get(
            "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )


def _collect_one(
    prometheus: Prometheus,
    tenant: str | None,
    region: str | None,
    history_minutes: int,
    step: int,
) -> tuple[list[TenantStats], list[RegionStats]]:
    tenants: dict[tuple[str, str], TenantStats] = {}
    selector = _selector(tenant, region)
    for name, record in TENANT_FIGURES.items():
        for sample in prometheus.query(record + selector):
            labels = sample["metric"]
            key = (labels["tenant"], labels["region"])
            row = tenants.setdefault(key, TenantStats(*key))
            setattr(row, name, _number(sample["value"][1]))
    end = time.time()
    start = end - history_minutes * 60
    history = TENANT_FIGURES["requests_per_second"] + selector
    for series in prometheus.query_range(history, start, end, step):
        labels = series["metric"]
        row = tenants.get((labels["tenant"], labels["region"]))
        if row is not None:
            row.history = [_number(value) or 0.0 for _, value in series["values"]]
    regions: dict[str, RegionStats] = {}
    for name, record in REGION_FIGURES.items():
        for sample in prometheus.query(record + _region_selector(region)):
            row = regions.setdefault(
                sample["metric"]["region"], RegionStats(sample["metric"]["region"])
            )
            setattr(row, name, _number(sample["value"][1]))
    return list(tenants.values()), list(regions.values())


def collect(
    urls: Sequence[str],
    tenant: str | None = None,
    region: str | None = None,
    history_minutes: int = 15,
    step: int = 60,
    timeout: float = 5,
) -> Snapshot:
    """Figures from every Prometheus in `urls`, tenants and regions sorted by traffic."""
    tenants: list[TenantStats] = []
    regions: list[RegionStats] = []
    errors: dict[str, str] = {}
    with httpx.Client(timeout=timeout) as client:
        for url in urls:
            try:
                found = _collect_one(Prometheus(url, client), tenant, region, history_minutes, step)
            except PrometheusError as exc:
                errors[url] = str(exc)
                continue
            tenants.extend(found[0])
            regions.extend(found[1])
    tenants.sort(key=lambda t: (-(t.requests_per_second or 0), t.tenant, t.region))
    regions.sort(key=lambda r: (-(r.requests_per_second or 0), r.region))
    return Snapshot(tenants=tenants, regions=regions, errors=errors)


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled to the largest (all zero: the lowest block)."""
    top = max(values, default=0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(
        SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values
    )


def prometheus_urls(inventory: Path) -> list[str]:
    """The Prometheus servers of an inventory: its `prometheus` group, private addresses."""
    data = inventory_json(inventory)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    urls = []
    for host in data.get("prometheus", {}).get("hosts", []):
        hv = hostvars.get(host, {})
        urls.append(host_url(host, hv, hv.get("cdn_prometheus_port", DEFAULT_PROMETHEUS_PORT)))
    if not urls:
        raise ValueError(
            f"{inventory}: the prometheus group has no hosts; pass --prometheus URL instead"
        )
    return urls
