"""Zone scale: time to render gdnsd's zones for N tenants, and gdnsd's time to load them.

Prints one JSON document. For each size: rendering the platform zone (one CNAME per
tenant), rendering the tenants' own domains as zones (the lab's `serve_tenant_domains`, two
domains per tenant), both repeated `--repeat` times (median), and `gdnsd checkconf` of the
platform zone (the check the geodns role runs before a zone set goes into service).

    python bench/zone_scale.py                   # 10k and 100k tenants
    python bench/zone_scale.py --sizes 1000000

Tenant names come from `TenantNames` directly: reading and validating the tenant files is
tenant_scale.py's figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cdnctl.fleet import dns

SETTINGS = dns.parse_settings(
    {
        "domain": "cdn.example.net",
        "regions": {"eu": {"nets": ["192.0.2.0/25"]}, "us": {"nets": ["192.0.2.128/25"]}},
        "serve_tenant_domains": True,
    }
)
FLEET = dns.Fleet(
    edges=(dns.Host("eu-edge-1", "eu", "192.0.2.10"), dns.Host("us-edge-1", "us", "192.0.2.140")),
    dns=(dns.Host("eu-dns-1", "eu", "192.0.2.53"), dns.Host("us-dns-1", "us", "192.0.2.153")),
)


def tenants(count: int) -> list[dns.TenantNames]:
    return [
        dns.TenantNames(f"tenant-{n:07d}", (f"cdn.t{n}.example.com", f"*.img.t{n}.example.com"))
        for n in range(count)
    ]


def timed(function, repeat: int) -> tuple[float, object]:
    runs, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), result


def checkconf_seconds(zone: str) -> float | None:
    if shutil.which("gdnsd") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        server = dns.ServerOptions(listen=("127.0.0.1:5353",), run_dir=tmp, state_dir=tmp)
        config = dns.render_config(SETTINGS, FLEET, server)
        dns.write_tree(Path(tmp), config, {SETTINGS.domain: zone})
        start = time.perf_counter()
        subprocess.run(["gdnsd", "-c", tmp, "checkconf"], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        names = tenants(size)
        platform_s, zone = timed(lambda n=names: dns.platform_zone(SETTINGS, FLEET, n), args.repeat)
        domains_s, zones = timed(lambda n=names: dns.tenant_zones(SETTINGS, FLEET, n), args.repeat)
        results.append(
            {
                "tenants": size,
                "platform_zone_seconds": round(platform_s, 3),
                "platform_zone_bytes": len(zone),
                "tenant_domain_zones_seconds": round(domains_s, 3),
                "tenant_domain_zones": len(zones),
                "gdnsd_checkconf_seconds": round(checkconf_seconds(zone) or 0, 3),
            }
        )
    print(
        json.dumps({"benchmark": "zone_scale", "repeat": args.repeat, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
