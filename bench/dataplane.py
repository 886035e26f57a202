"""Data-plane benchmark: the cdnctl edge against plain nginx proxy_cache. Prints one JSON.

Measured on loopback with wrk, interleaved rounds (plain, edge, plain, edge, ...), medians:
- HIT req/s and p99 latency for the same 1 KiB object, edge with 3 tenants and 100k tenants,
  as a ratio to plain nginx proxy_cache (same worker count, JSON access log, sendfile);
- time to apply a 100k-tenant bundle to a running edge (from 3 tenants: every tenant is new),
  then a 100k-tenant bundle in which one tenant changed, each with a concurrent client
  counting failed requests, and whether nginx master/worker PIDs stayed the same (0 reloads);
- purge-all latency (admin API round trip).
Runs in well under 5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dataplane.bundles import make_bundle, tenant  # noqa: E402

from cdnctl.bundle import bundle_json  # noqa: E402
from cdnctl.edge_client import AdminClient, Edge  # noqa: E402
from cdnctl.edge_runtime import NGINX_BINARY, EdgeNode, free_port  # noqa: E402
from cdnctl.nginx_conf import NodeSettings  # noqa: E402
from cdnctl.sample_origin import SampleOrigin  # noqa: E402

ROUNDS = 5
WRK_SECONDS = 3
WRK_CONNECTIONS = 32
TOKEN = "bench-token"
HOST = "t0.bench.test"
PATH = "/obj"

PLAIN_CONF = """
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format json escape=json '{{"time":"$time_iso8601","host":"$host","status":$status,'
        '"bytes":$bytes_sent,"cache_status":"$upstream_cache_status",'
        '"upstream_addr":"$upstream_addr","request_time":$request_time}}';
    access_log {prefix}/access.log json;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 10000;
    sendfile on;
    tcp_nopush on;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=plain:32m use_temp_path=off;
    upstream origin {{ server {origin}; keepalive 16; }}
    server {{
        listen {listen} reuseport backlog=4096;
        location / {{
            proxy_cache plain;
            proxy_cache_valid 200 1h;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://origin;
        }}
    }}
}}
"""


def wrk(url: str, host: str) -> tuple[float, float]:
    """(requests per second, p99 latency in ms)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--latency", "-H",
         f"Host: {host}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} errors against {url}")
    return rps, p99


class PlainNginx:
    def __init__(self, prefix: Path, origin: str) -> None:
        self.prefix = prefix
        self.listen = f"127.0.0.1:{free_port()}"
        (prefix / "tmp").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(
            PLAIN_CONF.format(
                # Same rule as EdgeNode: a private instance's workers run as the invoking user.
                user="user root root;" if os.geteuid() == 0 else "",
                prefix=prefix,
                origin=origin,
                listen=self.listen,
            )
        )
        self.process = subprocess.Popen(
            [NGINX_BINARY, "-p", str(prefix), "-c", "nginx.conf", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://{self.listen}{PATH}", headers={"Host": HOST}, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("plain nginx did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def tenants_bundle(count: int, origin: str, changed: int | None = None) -> dict[str, Any]:
    """`count` tenants; tenant number `changed`, if any, with another TTL."""
    return make_bundle(
        *(
            tenant(f"t{i}", [f"t{i}.bench.test"], origin, default_ttl=60 if i == changed else 3600)
            for i in range(count)
        )
    )


def interleaved(plain: PlainNginx, edge: EdgeNode) -> dict[str, float]:
    plain_rps, plain_p99, edge_rps, edge_p99 = [], [], [], []
    for _ in range(ROUNDS):
        rps, p99 = wrk(f"http://{plain.listen}{PATH}", HOST)
        plain_rps.append(rps)
        plain_p99.append(p99)
        rps, p99 = wrk(f"{edge.base_url}{PATH}", HOST)
        edge_rps.append(rps)
        edge_p99.append(p99)
    return {
        "edge_rps_median": round(statistics.median(edge_rps)),
        "plain_rps_median": round(statistics.median(plain_rps)),
        "ratio_median": round(
            statistics.median(e / p for e, p in zip(edge_rps, plain_rps, strict=True)), 3
        ),
        "edge_p99_ms_median": round(statistics.median(edge_p99), 3),
        "plain_p99_ms_median": round(statistics.median(plain_p99), 3),
    }


def _latency_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def apply_under_load(edge: EdgeNode, body: bytes) -> dict[str, Any]:
    """POST the bundle while wrk (another process: no GIL shared with the sender) keeps
    requesting a cached object; wrk counts every failed request (errors, non-2xx)."""
    master, workers = edge.master_pid, edge.worker_pids()
    load = subprocess.Popen(
        ["wrk", "-t1", "-c2", "-d120s", "-H", f"Host: {HOST}", f"{edge.base_url}{PATH}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.3)
    started = time.monotonic()
    with AdminClient(Edge(name="bench", url=edge.admin_url), TOKEN, timeout=300) as client:
        answer = client.push_bundle(body)  # what `cdnctl apply` sends
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    load.send_signal(signal.SIGINT)  # wrk stops and prints its summary
    out = load.communicate(timeout=30)[0]
    last = httpx.get(f"{edge.base_url}{PATH}", headers={"Host": "t99999.bench.test"})
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        failed += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    slowest = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return {
        "apply_seconds": round(elapsed, 3),
        "bundle_mib": round(len(body) / 2**20, 1),
        "tenants": answer["tenants"],
        "changed_tenants": answer["changed"],
        "requests_during_apply": requests,
        "failed_requests_during_apply": failed,
        "slowest_request_ms_during_apply": round(_latency_ms(slowest), 1),
        "last_tenant_served": last.status_code == 200,
        "reloads": 0 if (edge.master_pid, edge.worker_pids()) == (master, workers) else 1,
    }


def purge_all_latency(edge: EdgeNode) -> float:
    samples = []
    for _ in range(5):
        httpx.get(f"{edge.base_url}{PATH}", headers={"Host": HOST})
        started = time.monotonic()
        httpx.post(
            f"{edge.admin_url}/purge",
            json={"tenant": "t0", "all": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).raise_for_status()
        samples.append((time.monotonic() - started) * 1000)
    return round(statistics.median(samples), 3)


def main() -> None:
    started = time.monotonic()
    result: dict[str, Any] = {
        "object_bytes": 1024,
        "rounds": ROUNDS,
        "wrk": {"threads": 1, "connections": WRK_CONNECTIONS, "seconds": WRK_SECONDS},
        "workers": 1,
    }
    with (
        tempfile.TemporaryDirectory(prefix="cdnctl-bench-") as tmp,
        SampleOrigin("bench") as origin,
    ):
        origin.behave(PATH, cache_control="max-age=86400", size=1024)
        plain = PlainNginx(Path(tmp) / "plain", origin.address)
        settings = NodeSettings(
            prefix=Path(tmp) / "edge",
            listen=f"127.0.0.1:{free_port()}",
            admin_listen=f"127.0.0.1:{free_port()}",
            admin_token=TOKEN,
            workers=1,
            config_dict_size="256m",
            admin_max_body="1024m",
        )
        edge = EdgeNode(settings)
        try:
            edge.start()
            small = bundle_json(tenants_bundle(3, origin.address))
            httpx.post(
                f"{edge.admin_url}/config",
                content=small,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ).raise_for_status()
            httpx.get(f"{edge.base_url}{PATH}", headers={"Host": HOST})
            result["hit_3_tenants"] = interleaved(plain, edge)
            build_started = time.monotonic()
            big = bundle_json(tenants_bundle(100_000, origin.address))
            result["bundle_build_seconds"] = round(time.monotonic() - build_started, 2)
            result["apply_100k"] = apply_under_load(edge, big)
            # The common case: a commit changes one tenant of a 100k-tenant fleet.
            one_changed = bundle_json(tenants_bundle(100_000, origin.address, changed=4242))
            result["apply_100k_one_changed"] = apply_under_load(edge, one_changed)
            httpx.get(f"{edge.base_url}{PATH}", headers={"Host": HOST})
            result["hit_100k_tenants"] = interleaved(plain, edge)
            result["purge_all_ms_median"] = purge_all_latency(edge)
        finally:
            edge.stop()
            plain.stop()
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
