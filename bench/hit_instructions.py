"""Instructions per cache HIT, counted by callgrind: repeatable where req/s is noise. Prints JSON.

Each server runs as one nginx process (master_process off) under valgrind --tool=callgrind.
After a warm-up, its counters are zeroed, REQUESTS keep-alive requests for the same cached
1 KiB object are sent, and the user-space instructions (Ir) it executed are divided by
REQUESTS. The same binary, config and requests give the same count whatever else the machine
is doing, so a change of a few hundred instructions per request shows, where wrk's req/s
moves by ±30 % between runs.

Kernel work is not counted: on loopback it is about two thirds of a HIT's CPU and the same
for every server, so these ratios are larger than req/s ratios. They say where the
user-space work goes:
- plain: the issue's baseline (nginx proxy_cache, JSON access log);
- plain_featured: plus the edge's log line, X-Request-ID and X-Cache-Status, without Lua;
- lua_floor: plain_featured plus three empty ngx_lua handlers (rewrite, header filter, log),
  the cost of entering the phases the edge's Lua runs in;
- edge: the cdnctl edge with 3 tenants, with the inclusive cost of each of its ngx_lua
  handlers (what our Lua and the variables it reads cost, above the floor);
- edge_100k_tenants: the same with 100k tenants applied (a few minutes under valgrind).
Also simulated cache misses per request (valgrind's model of this CPU's caches): a bigger
working set per request shows there without timing noise.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cdnctl.bundle.format import bundle_json  # noqa: E402
from cdnctl.edge.runner import NGINX_BINARY, free_port, write_instance  # noqa: E402
from cdnctl.lab.sample_origin import SampleOrigin  # noqa: E402
from dataplane import HOST, PATH, TOKEN, edge_settings, plain_conf, tenants_bundle  # noqa: E402

VARIANTS = ("plain", "plain_featured", "lua_floor", "edge", "edge_100k_tenants")
REQUESTS = 2000
WARM_UP = 300
# ngx_lua's handler entry points, inclusive of everything they call.
PHASES = {
    "rewrite": "ngx_http_lua_rewrite_handler_file",
    "header_filter": "ngx_http_lua_header_filter_file",
    "log": "ngx_http_lua_log_handler_file",
}


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # valgrind starts nginx + LuaJIT slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx under valgrind exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"nginx under valgrind did not answer {url}")


def inclusive_costs(dump: Path) -> dict[str, int]:
    """Inclusive Ir of every function in a callgrind dump, by name."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    costs: dict[str, int] = {}
    for match in re.finditer(r"^\s*([\d,]+) .*?:(\w+) \[", text, re.M):
        costs.setdefault(match.group(2), int(match.group(1).replace(",", "")))
    return costs


def count(prefix: Path, conf: str, listen: str, ready_url: str, bundle: bytes | None = None,
          admin: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Ir per HIT of the nginx in `prefix` (and, for an edge, per ngx_lua phase handler)."""
    out = prefix / "callgrind.out"
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--smc-check=all", "--cache-sim=yes",
         f"--callgrind-out-file={out}",
         NGINX_BINARY, "-p", str(prefix), "-c", conf, "-g", "daemon off; master_process off;"],
        stdout=subprocess.DEVNULL, stderr=(prefix / "valgrind.log").open("w"),
    )  # fmt: skip
    try:
        wait_until_up(ready_url, process)
        if bundle is not None:
            httpx.post(
                f"http://{admin}/config", content=bundle,
                headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300,
            ).raise_for_status()  # fmt: skip
        with httpx.Client(base_url=f"http://{listen}", headers={"Host": HOST}, timeout=60) as c:
            for _ in range(WARM_UP):
                c.get(PATH).raise_for_status()
            if c.get(PATH).headers.get("X-Cache-Status", "HIT") != "HIT":
                raise RuntimeError(f"{prefix.name}: the object is not served from the cache")
            subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True,
                           capture_output=True)  # fmt: skip
            for _ in range(REQUESTS):
                c.get(PATH)
            subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True,
                           capture_output=True)  # fmt: skip
        dump = max(prefix.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        text = dump.read_text()
        events = re.search(r"^events:\s+(.+)$", text, re.M)
        totals = re.search(r"^(?:summary|totals):\s+([\d ]+)$", text, re.M)
        if not (events and totals):
            raise RuntimeError(f"{dump}: no events or totals")
        total = dict(zip(events.group(1).split(), map(int, totals.group(1).split()), strict=False))
        result: dict[str, Any] = {
            "ir_per_request": round(total["Ir"] / REQUESTS),
            # Simulated first-level data and last-level cache misses (valgrind's model of
            # this CPU's caches): where a bigger working set shows without timing noise.
            "d1_misses_per_request": round((total["D1mr"] + total["D1mw"]) / REQUESTS, 1),
            "ll_misses_per_request": round(
                (total["ILmr"] + total["DLmr"] + total["DLmw"]) / REQUESTS, 1
            ),
        }
        if bundle is not None:
            costs = inclusive_costs(dump)
            result["ir_per_request_by_lua_phase"] = {
                phase: round(costs.get(fn, 0) / REQUESTS) for phase, fn in PHASES.items()
            }
        return result
    finally:
        process.terminate()
        process.wait(60)


def main(only: list[str]) -> None:
    """Run every variant, or only those named on the command line (`edge` alone: ~1 min)."""
    started = time.monotonic()
    wanted = set(only) or set(VARIANTS)
    if wanted - set(VARIANTS):
        unknown = sorted(wanted - set(VARIANTS))
        raise SystemExit(f"unknown variant(s) {unknown}: pick from {', '.join(VARIANTS)}")
    result: dict[str, Any] = {"object_bytes": 1024, "requests": REQUESTS}
    with (
        tempfile.TemporaryDirectory(prefix="cdnctl-bench-ir-") as tmp,
        SampleOrigin("bench") as origin,
    ):
        origin.behave(PATH, cache_control="max-age=86400", size=1024)
        for variant in ("plain", "plain_featured", "lua_floor"):
            if variant not in wanted:
                continue
            prefix = Path(tmp) / variant
            (prefix / "tmp").mkdir(parents=True)
            listen = f"127.0.0.1:{free_port()}"
            (prefix / "nginx.conf").write_text(plain_conf(prefix, origin.address, listen, variant))
            result[variant] = count(prefix, "nginx.conf", listen, f"http://{listen}/")
        for name, tenants in (("edge", 3), ("edge_100k_tenants", 100_000)):
            if name not in wanted:
                continue
            settings = edge_settings(Path(tmp) / name)
            write_instance(settings)
            result[name] = count(
                settings.prefix, "conf/nginx.conf", settings.listen,
                f"http://{settings.admin_listen}/health",
                bundle_json(tenants_bundle(tenants, origin.address)), settings.admin_listen,
            )  # fmt: skip
    result["total_seconds"] = round(time.monotonic() - started, 1)
    if wanted == set(VARIANTS):
        ratios(result)
    print(json.dumps(result, indent=2, sort_keys=True))


def ratios(result: dict[str, Any]) -> None:
    ir = {name: result[name]["ir_per_request"] for name in ("plain", "plain_featured", "lua_floor")}
    edge = result["edge"]["ir_per_request"]
    result["edge_over_plain"] = round(edge / ir["plain"], 3)
    result["edge_over_plain_featured"] = round(edge / ir["plain_featured"], 3)
    result["lua_floor_over_plain_featured"] = round(ir["lua_floor"] / ir["plain_featured"], 3)
    result["edge_lua_above_floor_ir"] = edge - ir["lua_floor"]
    big = result["edge_100k_tenants"]
    result["edge_100k_over_3_tenants_ir"] = round(big["ir_per_request"] / edge, 3)
    result["edge_100k_over_3_tenants_ll_misses"] = round(
        big["ll_misses_per_request"] / max(result["edge"]["ll_misses_per_request"], 0.1), 3
    )


if __name__ == "__main__":
    main(sys.argv[1:])
