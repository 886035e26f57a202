"""Data-plane benchmark: the cdnctl edge against plain nginx proxy_cache. Prints one JSON.

Measured on loopback with wrk, interleaved rounds (plain, edge, plain, edge, ...), medians:
- HIT req/s, p99 latency and worker CPU per request for the same 1 KiB object, an edge with 3
  tenants and one with 100k tenants (configured as the roles deploy it: access log
  buffered), all in one interleaved series (so edge 100k / edge 3 is paired too), as a
  ratio to plain nginx proxy_cache (same worker count, JSON access log, sendfile: the
  issue's baseline), and to "plain_featured": plain nginx that also does what the edge does
  without Lua (the edge's JSON log line, buffered; X-Request-ID and X-Cache-Status headers),
  which isolates the cost of the Lua (tenant routing, metrics, Age), and to "lua_floor":
  plain_featured with three empty ngx_lua handlers (rewrite, header filter, log), the cost
  of entering the phases the edge's Lua runs in before any of it runs;
- time to apply a 100k-tenant bundle to a running edge (from 3 tenants: every tenant is new),
  then a 100k-tenant bundle in which one tenant changed, then the delta of one more changed
  tenant (POST /config/delta: bytes sent, time), each with a concurrent client counting
  failed requests, and whether nginx master/worker PIDs stayed the same (0 reloads);
- purge-all latency (admin API round trip).
Runs in well under 5 minutes on 2 cores; `--apply-only` measures the applies alone.
`--with-1m` also brings a second edge from 3 tenants to 1M (all new), then applies
one-tenant deltas to it (a tenant early, in the middle and late in the sorted manifest,
each changed and then changed back: their median and slowest), with the same load and
counts, and reports that edge's memory (about 7 minutes more on 2 cores; the 1M-tenant
bundles the benchmark builds take several GiB of RAM). `--only-1m` runs just that part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.format import bundle_json, manifest_bytes, manifest_version
from cdnctl.bundle.synthetic import make_bundle, tenant
from cdnctl.edge.admin_client import AdminClient, Edge
from cdnctl.edge.nginx_conf import MODULES_DIR, NodeSettings
from cdnctl.edge.runner import NGINX_BINARY, EdgeNode, free_port
from cdnctl.lab.sample_origin import SampleOrigin

ROUNDS = 7
WRK_SECONDS = 3
WRK_CONNECTIONS = 32
TOKEN = "bench-token"
HOST = "t0.bench.test"
PATH = "/obj"
LARGE_PATH = "/large"  # a 100 KiB object: per-request costs weigh less than at 1 KiB
LARGE_BYTES = 100 * 1024

PLAIN_CONF = """
{user}
{modules}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
{log}
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 10000;
    sendfile on;
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
{headers}
        }}
    }}
}}
"""


PLAIN_LOG = """
    log_format json escape=json '{{"time":"$time_iso8601","host":"$host","status":$status,'
        '"bytes":$bytes_sent,"cache_status":"$upstream_cache_status",'
        '"upstream_addr":"$upstream_addr","request_time":$request_time}}';
    access_log {prefix}/access.log json;"""

# The edge's log line (templates/nginx/nginx.conf.j2), buffered as the roles deploy it.
FEATURED_LOG = """
    map $http_x_request_id $req_id {{
        "~^[A-Za-z0-9._:-]{{1,128}}$" $http_x_request_id;
        default $request_id;
    }}
    log_format json escape=json '{{"time":"$time_iso8601","tenant":"",'
        '"request_id":"$req_id","remote_addr":"$remote_addr","host":"$http_host",'
        '"method":"$request_method","uri":"$request_uri","status":$status,'
        '"bytes":$bytes_sent,"cache_status":"$upstream_cache_status",'
        '"upstream_addr":"$upstream_addr","upstream_time":"$upstream_response_time",'
        '"request_time":$request_time}}';
    access_log {prefix}/access.log json buffer=64k flush=1s;"""
FEATURED_HEADERS = """
            add_header X-Cache-Status $upstream_cache_status always;
            add_header X-Request-ID $req_id always;"""
# "lua_floor": plain_featured plus the three ngx_lua handlers the edge has, empty: what
# entering the rewrite, header filter and log phases costs before any of our code runs.
LUA_MODULES = """
load_module {modules_dir}/ndk_http_module.so;
load_module {modules_dir}/ngx_http_lua_module.so;"""
EMPTY_LUA_HANDLERS = """
            rewrite_by_lua_block { }
            header_filter_by_lua_block { }
            log_by_lua_block { }"""


def plain_conf(prefix: Path, origin: str, listen: str, variant: str = "plain") -> str:
    """nginx.conf of a plain server: "plain", "plain_featured" or "lua_floor"."""
    featured = variant in ("plain_featured", "lua_floor")
    floor = variant == "lua_floor"
    return PLAIN_CONF.format(
        # Same rule as EdgeNode: a private instance's workers run as the invoking user.
        user="user root root;" if os.geteuid() == 0 else "",
        modules=LUA_MODULES.format(modules_dir=MODULES_DIR) if floor else "",
        prefix=prefix,
        origin=origin,
        listen=listen,
        log=(FEATURED_LOG if featured else PLAIN_LOG).format(prefix=prefix),
        headers=(FEATURED_HEADERS if featured else "") + (EMPTY_LUA_HANDLERS if floor else ""),
    )


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wrk(url: str, host: str, worker: int | None = None) -> tuple[float, float, float]:
    """(requests per second, p99 latency in ms, worker CPU microseconds per request)."""
    cpu_before = cpu_seconds(worker) if worker else 0.0
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
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (cpu_seconds(worker) - cpu_before) if worker else 0.0
    return rps, p99, cpu / max(requests, 1) * 1e6


class PlainNginx:
    """nginx proxy_cache without our Lua (see plain_conf for the variants)."""

    def __init__(self, prefix: Path, origin: str, variant: str = "plain") -> None:
        self.prefix = prefix
        self.listen = f"127.0.0.1:{free_port()}"
        (prefix / "tmp").mkdir(parents=True)
        (prefix / "nginx.conf").write_text(plain_conf(prefix, origin, self.listen, variant))
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

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}"

    def worker_pids(self) -> list[int]:
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in children.split()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def edge_settings(prefix: Path, million: bool = False) -> NodeSettings:
    """A one-worker edge sized for 100k tenants (or 1M), its access log as the roles deploy
    it."""
    return NodeSettings(
        prefix=prefix,
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=f"127.0.0.1:{free_port()}",
        admin_token=TOKEN,
        workers=1,
        config_dict_size="3072m" if million else "256m",
        admin_max_body="2048m" if million else "1024m",
        access_log_buffer="64k",
    )


def tenants_bundle(
    count: int, origin: str, changed: int | None = None, ttl: int = 60
) -> dict[str, Any]:
    """`count` tenants; tenant number `changed`, if any, with TTL `ttl`."""
    return make_bundle(
        *(
            tenant(f"t{i}", [f"t{i}.bench.test"], origin, default_ttl=ttl if i == changed else 3600)
            for i in range(count)
        )
    )


Server = PlainNginx | EdgeNode


def interleaved(
    servers: dict[str, Server], ratios: dict[str, tuple[str, str]], path: str = PATH
) -> dict[str, float]:
    """Rounds of wrk against each server in turn; medians of each server's req/s, p99 and
    worker CPU per request, and of the per-round req/s ratios {name: (numerator, baseline)}."""
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
    for server in servers.values():  # warm: the first request is a MISS
        httpx.get(f"{server.base_url}{path}", headers={"Host": HOST})
    for _ in range(ROUNDS):
        for name, server in servers.items():
            runs[name].append(wrk(f"{server.base_url}{path}", HOST, server.worker_pids()[0]))
    result: dict[str, float] = {}
    for name, samples in runs.items():
        result[f"{name}_rps_median"] = round(statistics.median(r for r, _, _ in samples))
        result[f"{name}_p99_ms_median"] = round(statistics.median(p for _, p, _ in samples), 3)
        result[f"{name}_cpu_us_per_request_median"] = round(
            statistics.median(c for _, _, c in samples), 1
        )
    for key, (numerator, baseline) in ratios.items():
        pairs = zip(runs[numerator], runs[baseline], strict=True)
        result[key] = round(statistics.median(n[0] / b[0] for n, b in pairs), 3)
    return result


def _latency_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def slowest_without_apply(edge: EdgeNode, seconds: int = 3) -> float:
    """The slowest request of the same load as apply_under_load's, with no apply: the
    baseline of its slowest_request_ms_during_apply (ms)."""
    httpx.get(f"{edge.base_url}{PATH}", headers={"Host": HOST})  # cached before, as there
    out = subprocess.run(
        ["wrk", "-t1", "-c2", f"-d{seconds}s", "-H", f"Host: {HOST}", f"{edge.base_url}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    slowest = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return round(_latency_ms(slowest), 1)


def apply_under_load(edge: EdgeNode, body: bytes, delta: bool = False) -> dict[str, Any]:
    """POST the bundle (or delta) while wrk (another process: no GIL shared with the
    sender) keeps requesting a cached object; wrk counts every failed request (errors,
    non-2xx)."""
    master, workers = edge.master_pid, edge.worker_pids()
    load = subprocess.Popen(
        ["wrk", "-t1", "-c2", "-d120s", "-H", f"Host: {HOST}", f"{edge.base_url}{PATH}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.3)
    started = time.monotonic()
    with AdminClient(Edge(name="bench", url=edge.admin_url), TOKEN, timeout=300) as client:
        # what `cdnctl apply` sends
        answer = client.push_delta(body) if delta else client.push_bundle(body)
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
        "bytes_sent": len(body),
        "tenants": answer["tenants"],
        "changed_tenants": answer["changed"],
        "requests_during_apply": requests,
        "failed_requests_during_apply": failed,
        "slowest_request_ms_during_apply": round(_latency_ms(slowest), 1),
        "last_tenant_served": last.status_code == 200,
        "reloads": 0 if (edge.master_pid, edge.worker_pids()) == (master, workers) else 1,
    }


def worker_memory(edge: EdgeNode) -> dict[str, float]:
    """The worker's resident memory, of which shared (the shared dicts: tenants, host index,
    manifest, fingerprints; the cache keys zone), and its Lua heap, in MiB."""
    status = Path(f"/proc/{edge.worker_pids()[0]}/status").read_text()
    fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", status, re.MULTILINE))
    metrics = httpx.get(
        f"{edge.admin_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    ).text
    heap = re.search(r'^cdn_lua_memory_bytes\{worker="0"\} (\S+)', metrics, re.MULTILINE)
    return {
        "worker_rss_mib": round(int(fields["VmRSS"]) / 1024, 1),
        "worker_rss_shared_mib": round(int(fields["RssShmem"]) / 1024, 1),
        "lua_heap_mib": round(float(heap.group(1)) / 2**20, 1) if heap else -1.0,
    }


def one_changed(base: dict[str, Any], index: int, origin: str, ttl: int) -> dict[str, Any]:
    """`base` with tenant number `index` given TTL `ttl` (shares every other tenant)."""
    changed = {**base, "tenants": dict(base["tenants"])}
    changed["tenants"][f"t{index}"] = tenant(
        f"t{index}", [f"t{index}.bench.test"], origin, default_ttl=ttl
    )
    changed["version"] = manifest_version(changed)
    return changed


def million_tenants(tmp: Path, origin: str) -> dict[str, Any]:
    """A 1M-tenant all-new apply, then one-tenant deltas there (see the module's doc)."""
    result: dict[str, Any] = {}
    edge = EdgeNode(edge_settings(tmp / "edge-1m", million=True))
    edge.start()
    try:
        httpx.post(
            f"{edge.admin_url}/config",
            content=bundle_json(tenants_bundle(3, origin)),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).raise_for_status()
        base = tenants_bundle(1_000_000, origin)
        base_bytes = bundle_json(base)
        result["slowest_request_ms_without_apply"] = slowest_without_apply(edge)
        result["apply_1m"] = apply_under_load(edge, base_bytes)
        del base_bytes
        time.sleep(5)
        result["edge_1m_memory_after_full"] = worker_memory(edge)
        deltas: list[dict[str, Any]] = []
        running, running_manifest = base, manifest_bytes(base)
        for index in (5, 500_000, 999_999):  # t5, t500000, t999999 in the sorted manifest
            for ttl in (120, 3600):  # changed, then back as it was
                target = one_changed(running, index, origin, ttl)
                target_manifest = manifest_bytes(target)
                delta = make_delta(
                    bundle_json(target), target_manifest, running_manifest,
                    running["version"], checked=True,
                )  # fmt: skip
                deltas.append(apply_under_load(edge, delta.body, delta=True))
                running, running_manifest = target, target_manifest
        seconds = [d["apply_seconds"] for d in deltas]
        result["delta_1m_one_changed"] = {
            "applies": len(deltas),
            "apply_seconds_median": round(statistics.median(seconds), 3),
            "apply_seconds_max": max(seconds),
            "bytes_sent_max": max(d["bytes_sent"] for d in deltas),
            "slowest_request_ms_during_apply_max": max(
                d["slowest_request_ms_during_apply"] for d in deltas
            ),
            "failed_requests_during_apply": sum(d["failed_requests_during_apply"] for d in deltas),
            "reloads": sum(d["reloads"] for d in deltas),
        }
        time.sleep(5)
        result["edge_1m_memory"] = worker_memory(edge)
        baseline = result["slowest_request_ms_without_apply"]
        result["stall_ms_over_baseline"] = {
            "apply_1m": round(result["apply_1m"]["slowest_request_ms_during_apply"] - baseline, 1),
            "delta_1m_one_changed": round(
                result["delta_1m_one_changed"]["slowest_request_ms_during_apply_max"] - baseline, 1
            ),
        }
    finally:
        edge.stop()
    return result


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apply-only", action="store_true", help="Skip the HIT series.")
    parser.add_argument("--with-1m", action="store_true", help="Also 1M tenants (see above).")
    parser.add_argument("--only-1m", action="store_true", help="Only the 1M figures.")
    args = parser.parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "object_bytes": 1024,
        "large_object_bytes": LARGE_BYTES,
        "rounds": ROUNDS,
        "wrk": {"threads": 1, "connections": WRK_CONNECTIONS, "seconds": WRK_SECONDS},
        "workers": 1,
    }
    with (
        tempfile.TemporaryDirectory(prefix="cdnctl-bench-") as tmp,
        SampleOrigin("bench") as origin,
    ):
        origin.behave(PATH, cache_control="max-age=86400", size=1024)
        origin.behave(LARGE_PATH, cache_control="max-age=86400", size=LARGE_BYTES)
        plain = PlainNginx(Path(tmp) / "plain", origin.address)
        featured = PlainNginx(Path(tmp) / "featured", origin.address, "plain_featured")
        floor = PlainNginx(Path(tmp) / "floor", origin.address, "lua_floor")
        edges = {
            size: EdgeNode(edge_settings(Path(tmp) / f"edge-{size}")) for size in ("3", "100k")
        }
        try:
            if args.only_1m:
                result["million"] = million_tenants(Path(tmp), origin.address)
                return finish(result, started)
            for edge in edges.values():
                edge.start()
                httpx.post(
                    f"{edge.admin_url}/config",
                    content=bundle_json(tenants_bundle(3, origin.address)),
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ).raise_for_status()
            big_edge = edges["100k"]
            build_started = time.monotonic()
            big = bundle_json(tenants_bundle(100_000, origin.address))
            result["bundle_build_seconds"] = round(time.monotonic() - build_started, 2)
            result["slowest_request_ms_without_apply"] = slowest_without_apply(big_edge)
            result["apply_100k"] = apply_under_load(big_edge, big)
            # The common case: a commit changes one tenant of a 100k-tenant fleet.
            base = tenants_bundle(100_000, origin.address, changed=4242)
            one_changed = bundle_json(base)
            result["apply_100k_one_changed"] = apply_under_load(big_edge, one_changed)
            # The same commit as a delta against what the edge runs now.
            target = tenants_bundle(100_000, origin.address, changed=4242, ttl=120)
            target_bytes, manifests = (
                bundle_json(target),
                (manifest_bytes(target), manifest_bytes(base)),
            )
            delta_started = time.monotonic()
            delta = make_delta(target_bytes, *manifests, base["version"])
            result["make_delta_100k_seconds"] = round(time.monotonic() - delta_started, 3)
            result["apply_100k_delta_one_changed"] = apply_under_load(
                big_edge, delta.body, delta=True
            )
            time.sleep(3)  # the apply's garbage is collected in steps, metrics each second
            result["edge_100k_memory"] = worker_memory(big_edge)
            baseline = result["slowest_request_ms_without_apply"]
            result["stall_ms_over_baseline"] = {
                name: round(result[name]["slowest_request_ms_during_apply"] - baseline, 1)
                for name in ("apply_100k", "apply_100k_one_changed", "apply_100k_delta_one_changed")
            }
            if args.with_1m:
                result["million"] = million_tenants(Path(tmp), origin.address)
            if args.apply_only:
                result["purge_all_ms_median"] = purge_all_latency(big_edge)
                return finish(result, started)
            # One interleaved series for all four, so the 100k/3-tenant ratio is paired too.
            result["hit"] = interleaved(
                {"plain": plain, "plain_featured": featured, "lua_floor": floor,
                 "edge": edges["3"], "edge_100k_tenants": big_edge},
                {
                    "ratio_median": ("edge", "plain"),
                    "ratio_featured_median": ("edge", "plain_featured"),
                    "ratio_lua_floor_median": ("edge", "lua_floor"),
                    "lua_floor_over_featured_median": ("lua_floor", "plain_featured"),
                    "ratio_100k_tenants_median": ("edge_100k_tenants", "plain"),
                    "ratio_100k_over_3_tenants_median": ("edge_100k_tenants", "edge"),
                },
            )  # fmt: skip
            result["hit_100kib_object"] = interleaved(
                {"plain": plain, "plain_featured": featured, "edge": edges["3"]},
                {
                    "ratio_median": ("edge", "plain"),
                    "ratio_featured_median": ("edge", "plain_featured"),
                },
                LARGE_PATH,
            )
            result["purge_all_ms_median"] = purge_all_latency(big_edge)
        finally:
            for edge in edges.values():
                edge.stop()
            plain.stop()
            featured.stop()
            floor.stop()
    finish(result, started)


def finish(result: dict[str, Any], started: float) -> None:
    result["total_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
