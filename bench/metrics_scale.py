"""Metric cardinality at scale: one edge's /metrics with 100k tenants, traffic on 1k. Prints JSON.

An edge (one worker, as the roles size it) gets a 100k-tenant bundle; 1k of the tenants (every
100th) then get traffic: a MISS, a HIT and a 404 from the origin each. Measured:
- /metrics size and samples before any traffic (series exist only for tenants with traffic)
  and after, and samples per tenant with traffic;
- the time the admin API takes to render /metrics (ROUNDS scrapes, median and max), which is
  what Prometheus waits for, against the issue's targets (under 1 s and 20 MB);
- `promtool check metrics` on the text (the exposition format Prometheus parses).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from cdnctl.bundle.format import bundle_json  # noqa: E402
from cdnctl.edge.runner import EdgeNode  # noqa: E402
from cdnctl.lab.sample_origin import SampleOrigin  # noqa: E402
from dataplane import TOKEN, edge_settings, tenants_bundle  # noqa: E402

TENANTS = 100_000
WITH_TRAFFIC = 1_000
ROUNDS = 10
TARGET_SECONDS = 1.0
TARGET_BYTES = 20 * 1000 * 1000


def scrape(admin: httpx.Client) -> tuple[float, str]:
    started = time.perf_counter()
    response = admin.get("/metrics")
    response.raise_for_status()
    return time.perf_counter() - started, response.text


def samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    result: dict[str, object] = {"tenants": TENANTS, "tenants_with_traffic": WITH_TRAFFIC}
    with (
        tempfile.TemporaryDirectory(prefix="cdnctl-bench-metrics-") as tmp,
        SampleOrigin("bench") as origin,
    ):
        origin.behave("/", cache_control="max-age=86400")
        origin.behave("/gone", status=404, cache_control="no-store")
        settings = edge_settings(Path(tmp) / "edge")
        with EdgeNode(settings) as edge:
            admin = httpx.Client(
                base_url=edge.admin_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300
            )
            bundle = bundle_json(tenants_bundle(TENANTS, origin.address))
            admin.post("/config", content=bundle).raise_for_status()
            _, idle = scrape(admin)
            result["idle_metrics_bytes"] = len(idle.encode())
            result["idle_samples"] = samples(idle)

            started = time.perf_counter()
            sent = 0
            with httpx.Client(base_url=edge.base_url, timeout=30) as client:
                for i in range(0, TENANTS, TENANTS // WITH_TRAFFIC):
                    host = {"Host": f"t{i}.bench.test"}
                    for path in ("/a", "/a", "/gone"):
                        client.get(path, headers=host)
                        sent += 1
            result["requests_sent"] = sent
            result["traffic_seconds"] = round(time.perf_counter() - started, 1)
            time.sleep(1.5)  # the worker flushes its counters every second

            timings, text = [], ""
            for _ in range(ROUNDS):
                seconds, text = scrape(admin)
                timings.append(seconds)
            size = len(text.encode())
            result["metrics_bytes"] = size
            result["samples"] = samples(text)
            result["samples_per_tenant_with_traffic"] = round(
                (samples(text) - samples(idle)) / WITH_TRAFFIC, 1
            )
            result["scrape_seconds_median"] = round(statistics.median(timings), 4)
            result["scrape_seconds_max"] = round(max(timings), 4)
            check = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
            )
            # promtool also lints (e.g. counters should end in _total) and then exits 1: the
            # exposition parsed if every complaint is a lint line.
            result["promtool_check_metrics"] = (check.stdout + check.stderr).strip() or "ok"
            result["target_seconds"] = TARGET_SECONDS
            result["target_bytes"] = TARGET_BYTES
            result["within_targets"] = max(timings) < TARGET_SECONDS and size < TARGET_BYTES
            admin.close()
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
