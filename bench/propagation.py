"""GitOps propagation on the lab: commit -> live on every edge, fleet-wide purge, drain. JSON.

Needs the lab (`make lab`). A bare repository starts as the project's tenants/ plus one
bench tenant (customer-d, the lab origin of customer-a); one `cdnctl sync --listen` loop
follows it. Measured, each from the `git push` returning (the commit is on the server):
- `commit_to_live_polling_s`: without the webhook, the loop finds the commit on its own
  (`--interval`, 2 s here) -> every edge and shield reports the commit in `GET /config`;
- `commit_to_live_webhook_s`: the same with the signed webhook a git server sends after
  the push (targets: p95 <= 5 s polling, <= 2 s with the webhook);
each commit changes the bench tenant's default TTL, so it is a real one-tenant delta.
- `purge_all_s` / `purge_url_s`: a purge sent to every edge and shield in parallel (what
  `cdnctl purge` does after reading the inventory), from the first request to the last
  edge's answer (target <= 200 ms);
- `drain_effective_s`: `cdnctl drain`'s library call on the lab's DNS hosts (what a roll or
  any process holding the inventory does; `drain_via`: the drain agents, or Ansible) -> no
  DNS host gives an eu client the edge any more; plus the edge TTL, the bound after which no
  client that honours the TTL opens a new connection to it (target <= TTL + 1 s);
  `drain_cli_*`: the same from running the `cdnctl drain` command (its start-up and
  inventory read included).
Medians and p95 of every series; the repository is put back to the project's tenants at
the end (the lab runs the bundle it ran before).

    python bench/propagation.py              # 10 commits per mode, 10 purges, 3 drains
    python bench/propagation.py --commits 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cdnctl.edge.admin_client import AdminClient, fan_out  # noqa: E402
from cdnctl.edge.runner import free_port  # noqa: E402
from cdnctl.fleet import dns as fleet_dns  # noqa: E402
from cdnctl.fleet import dns_hosts, drain  # noqa: E402
from cdnctl.fleet.sync_server import SIGNATURE_HEADER, signature  # noqa: E402
from cdnctl.fleet.targets import edges_from_inventory  # noqa: E402
from cdnctl.lab.fleet import inventory_dir, lab_environment  # noqa: E402
from cdnctl.lab.smoke import lab_view, resolve  # noqa: E402

SECRET = b"bench-webhook-secret"
TENANT = """\
id: customer-d
name: Customer D (bench/propagation.py)
contact: ops@customer-d.test
domains:
  - cdn.customer-d.test
origin:
  url: http://origin.customer-a.test:18081
cache:
  default_ttl: {ttl}s
"""
BOUND = 120.0  # every wait stops by itself


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def until(check: Callable[[], bool], what: str, step: float = 0.02) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < BOUND:
        try:
            if check():
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(step)
    raise SystemExit(f"{what}: not within {BOUND:.0f} s")


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


class Bench:
    def __init__(self, root: Path) -> None:
        self.env = lab_environment()
        self.token = self.env["CDNCTL_ADMIN_TOKEN"]
        self.inventory = inventory_dir()
        self.nodes = edges_from_inventory(self.inventory)  # edges and shields
        self.bare, self.work = root / "tenants.git", root / "work"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git(root, "clone", "--quiet", str(self.bare), str(self.work))
        git(self.work, "config", "user.email", "bench@cdnctl.test")
        git(self.work, "config", "user.name", "bench")
        shutil.copytree(ROOT / "tenants", self.work / "tenants")
        self.ttl = 3600
        self.write_tenant()
        self.push("bench tenant")
        self.root = root

    def write_tenant(self) -> None:
        (self.work / "tenants" / "customer-d.yaml").write_text(TENANT.format(ttl=self.ttl))

    def push(self, message: str) -> str:
        git(self.work, "add", "--all", "tenants")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def commits(self) -> dict[str, str | None]:
        def one(client: AdminClient) -> dict[str, Any]:
            return client.running_config()

        return {
            r.edge.name: (r.detail or {}).get("commit") if r.ok else None
            for r in fan_out(self.nodes, self.token, one, timeout=5)
        }

    def live(self, commit: str) -> bool:
        return all(c == commit for c in self.commits().values())

    def start_sync(self, interval: str, listen: str | None) -> subprocess.Popen[bytes]:
        secret = self.root / "secret"
        secret.write_bytes(SECRET)
        secret.chmod(0o600)
        argv = [
            str(Path(sys.executable).with_name("cdnctl")),
            *("sync", "--repo", str(self.bare), "--inventory", str(self.inventory)),
            *("--state-dir", str(self.root / "state"), "--interval", interval),
            *("--canary-window", "0.5"),
            *(("--listen", listen, "--secret-file", str(secret)) if listen else ()),
        ]
        log = (self.root / f"sync-{interval}.log").open("a")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def series(self, rounds: int, hook: str | None) -> list[float]:
        seconds = []
        for _ in range(rounds):
            self.ttl += 1
            self.write_tenant()
            commit = self.push(f"customer-d default_ttl {self.ttl}s")
            start = time.perf_counter()
            if hook:
                body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
                headers = {SIGNATURE_HEADER: signature(SECRET, body)}
                httpx.post(hook, content=body, headers=headers, timeout=10).raise_for_status()
            until(lambda c=commit: self.live(c), f"commit {commit[:12]} live")
            seconds.append(time.perf_counter() - start)
        return seconds

    def purge(self, rounds: int, request: dict[str, Any]) -> list[float]:
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            results = fan_out(self.nodes, self.token, lambda c: c.purge(request), timeout=5)
            seconds.append(time.perf_counter() - start)
            failed = [r.edge.name for r in results if not r.ok]
            if failed:
                raise SystemExit(f"purge failed on {failed}")
        return seconds

    def drains(self, rounds: int, *, cli: bool = False) -> tuple[list[float], set[str]]:
        """Seconds from each drain's start until no DNS host hands out the edge, and what
        carried the edits (the drain agents, or Ansible where none answered). `cli`: the
        `cdnctl drain` command itself (its start-up and inventory read included)."""
        view = lab_view(self.inventory)
        eu = next(r for r in view.regions if r.name == "eu")
        edge, address = sorted(eu.edges.items())[0]
        env = lab_environment()
        hosts = dns_hosts.DnsHosts(self.inventory, token=env["CDNCTL_ADMIN_TOKEN"])
        command = [str(Path(sys.executable).with_name("cdnctl")), "drain", edge]
        command += ["--inventory", str(self.inventory)]
        ways: set[str] = set()

        def gone() -> bool:
            answers = [
                resolve(a, "cdn.customer-a.test", eu.client_network) for a in eu.dns.values()
            ]
            answers += [
                resolve(a, "cdn.customer-a.test", eu.client_network)
                for r in view.regions
                if r.name != "eu"
                for a in r.dns.values()
            ]
            return all(answers) and all(address not in a for a in answers)

        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            if cli:
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"cdnctl drain failed: {done.stdout}{done.stderr}")
                ways.update(
                    "agent" if "(drain agent)" in line else "ansible"
                    for line in done.stdout.splitlines()
                    if "admin_state" in line
                )
            else:
                result = drain.set_drain(hosts, edge, drain=True)
                ways.update(host.via for host in result.hosts)
            until(gone, f"{edge} out of DNS", step=0.01)
            seconds.append(time.perf_counter() - start)
            drain.set_drain(hosts, edge, drain=False)
            until(lambda: not gone(), f"{edge} back in DNS", step=0.1)
        return seconds, ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10, help="commits per mode (>= 10)")
    parser.add_argument("--purges", type=int, default=10)
    parser.add_argument("--drains", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cdnctl-bench-propagation-") as tmp:
        bench = Bench(Path(tmp))
        listen = f"127.0.0.1:{free_port()}"
        sync = bench.start_sync("2s", listen)
        try:
            until(lambda: bench.live(git(bench.work, "rev-parse", "HEAD")), "first commit live")
            bench.series(1, None)  # warm: the compile cache and the first delta
            result["commit_to_live_polling_s"] = summary(bench.series(args.commits, None))
            result["commit_to_live_webhook_s"] = summary(
                bench.series(args.commits, f"http://{listen}/hook")
            )
            result["purge_url_s"] = summary(
                bench.purge(args.purges, {"tenant": "customer-d", "urls": ["/bench/x.txt"]})
            )
            result["purge_all_s"] = summary(
                bench.purge(args.purges, {"tenant": "customer-d", "all": True})
            )
            drains, ways = bench.drains(args.drains)
            ttl = fleet_dns.load_settings(bench.inventory).edge_ttl
            result["drain_effective_s"] = summary(drains)
            result["drain_no_new_connections_s"] = summary([d + ttl for d in drains])
            result["drain_via"] = sorted(ways)
            cli_drains, cli_ways = bench.drains(args.drains, cli=True)
            result["drain_cli_effective_s"] = summary(cli_drains)
            result["drain_cli_no_new_connections_s"] = summary([d + ttl for d in cli_drains])
            result["drain_cli_via"] = sorted(cli_ways)
            # In order: the first run lists the inventory (kept for the next ones).
            result["drain_cli_rounds_s"] = [round(d, 3) for d in cli_drains]
            result["edge_ttl_s"] = ttl
            result["nodes"] = len(bench.nodes)
            # Back to the project's tenants.
            (bench.work / "tenants" / "customer-d.yaml").unlink()
            last = bench.push("back to the project's tenants")
            httpx.post(
                f"http://{listen}/hook",
                content=b"{}",
                headers={SIGNATURE_HEADER: signature(SECRET, b"{}")},
                timeout=10,
            )
            until(lambda: bench.live(last), "the project's tenants back")
        finally:
            sync.terminate()
            sync.wait(30)
            kept = Path(tempfile.gettempdir()) / "cdnctl-propagation-sync.log"
            shutil.copyfile(Path(tmp) / "sync-2s.log", kept)  # its phases, per commit
            result["sync_log"] = str(kept)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
