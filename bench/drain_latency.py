"""Drain latency: `cdnctl drain EDGE` issued -> every DNS host answers without the edge.

Prints one JSON document. Real components on 127.0.0.0/8: three nginx edges (eu-edge-1 and
eu-edge-2 on 127.0.0.11 and .13, us-edge-1 on .12; gdnsd health-checks their admin
`GET /health`), two gdnsd DNS hosts (the inventory's `dns` group, Ansible's local
connection), and the real CLI as an SRE runs it (`cdnctl drain eu-edge-1 --inventory DIR`,
a new process each time: inventory, safety rules, one edit round on both DNS hosts). For
each round the clock starts when the command is started; `command_s` is when it returned,
`effective_s` when both DNS hosts answered an eu client (ECS 192.0.2.0/24) without the
drained edge (undrain: with it again), `gdnsd_wait_s` the part spent on the DNS hosts
waiting for gdnsd to read the file and answer from it. gdnsd runs as the geodns role runs
it (`geodns_immediate_states`: no admin_state timers), or with `--gdnsd-timers` with its
own (about 2 s). Each DNS host runs the role's drain agent (`admin_state.py serve`) and the
CLI has the token, so the edits go through the agents (`edits_via`); `--no-agents`: through
Ansible, as for an inventory without agents. The target is 5 s (the edge's TTL + 1 s for
issue 16's drain -> no new connection).

    python bench/drain_latency.py             # 5 drain/undrain rounds
    python bench/drain_latency.py --rounds 10 --gdnsd-timers
    python bench/drain_latency.py --no-agents
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import httpx
import yaml

from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode, free_port
from cdnctl.fleet import dns as fleet_dns
from cdnctl.fleet import dns_agents
from cdnctl.fleet.targets import inventory_json

EDGES = {"eu-edge-1": ("eu", "127.0.0.11"), "eu-edge-2": ("eu", "127.0.0.13")}
EDGES["us-edge-1"] = ("us", "127.0.0.12")
NETS = {"eu": "192.0.2.0/24", "us": "198.51.100.0/24"}
SETTINGS = {
    "domain": "cdn.test",
    "edge_ttl": 5,
    "regions": {region: {"nets": [net]} for region, net in NETS.items()},
    "health": {"interval": 2, "timeout": 1, "up_thresh": 2, "ok_thresh": 1, "down_thresh": 1},
}
CDNCTL = str(Path(sys.executable).with_name("cdnctl"))
AGENT_TOKEN = "drain-bench-agent-token-0123456789"
TIMEOUT = 30.0


def answers(port: int) -> list[str]:
    """What a DNS host answers an eu client for edge.cdn.test."""
    option = dns.edns.ECSOption("192.0.2.0", 24)
    message = dns.message.make_query("edge.cdn.test", "A", use_edns=0, options=[option])
    reply = dns.query.udp(message, "127.0.0.1", port=port, timeout=2)
    return sorted(rdata.to_text() for rrset in reply.answer for rdata in rrset)


def wait_until(predicate, started: float) -> float:
    while not predicate():
        if time.monotonic() - started > TIMEOUT:
            raise RuntimeError(f"not true within {TIMEOUT} s")
        time.sleep(0.02)
    return time.monotonic() - started


class Gdnsd:
    def __init__(self, root: Path, name: str, timers: bool) -> None:
        self.timers = timers
        self.config_dir, self.run_dir, self.state_dir = (
            root / name / d for d in ("etc", "run", "state")
        )
        for directory in (self.config_dir, self.run_dir, self.state_dir):
            directory.mkdir(parents=True, mode=0o755)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.agent_port = 0

    def start(self) -> None:
        command = [shutil.which("gdnsd") or "/usr/sbin/gdnsd", "-c", str(self.config_dir), "start"]
        if os.geteuid() == 0:  # gdnsd does not drop privileges itself
            user = pwd.getpwnam("gdnsd")
            for directory in (self.run_dir, self.state_dir):
                os.chown(directory, user.pw_uid, user.pw_gid)
            command = ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups", *command]
        env = dict(os.environ) if self.timers else {**os.environ, "GDNSD_TESTSUITE_NODELAY": "1"}
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    def start_agent(self) -> None:
        """The geodns role's drain agent (its unit's command line), as gdnsd's user."""
        token = self.state_dir.parent / "agent-token"
        token.write_text(AGENT_TOKEN + "\n")
        self.agent_port = free_port()
        argv = dns_agents.serve_command(
            f"127.0.0.1:{self.agent_port}",
            str(token),
            str(self.state_dir / "admin_state"),
            str(self.config_dir),
            timers=self.timers,
        )
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups", *argv]
        self.agent = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.agent_port}/health"
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the drain agent of {self.config_dir} did not start")

    def stop(self) -> None:
        for proc in (self.proc, self.agent):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


def write_inventory(base: Path, servers: list[Gdnsd], admin_port: int) -> Path:
    inventory = base / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "dns.yml").write_text(yaml.safe_dump({"cdn_dns": SETTINGS}))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {
        "edge": {
            name: {
                "cdn_region": region,
                "cdn_public_address": address,
                "cdn_admin_api_port": admin_port,
            }
            for name, (region, address) in EDGES.items()
        },
        "dns": {
            f"{region}-dns-1": {
                **local,
                "cdn_region": region,
                "cdn_public_address": "127.0.0.1",
                "geodns_state_dir": str(server.state_dir),
                "geodns_config_dir": str(server.config_dir),
                "geodns_immediate_states": not server.timers,
                "cdn_private_address": "127.0.0.1",
                "cdn_dns_admin_port": server.agent_port,
            }
            for region, server in zip(NETS, servers, strict=True)
        },
    }
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}})
    )
    return inventory


def common_port() -> int:
    """A port free on every edge address (gdnsd checks one admin port)."""
    while True:
        port = free_port("127.0.0.11")
        try:
            for _, address in EDGES.values():
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port


def run(rounds: int, timers: bool, agents: bool) -> dict:
    base = Path(tempfile.mkdtemp(prefix="cdnctl-drain-bench-"))
    base.chmod(0o755)
    admin_port = common_port()
    edges: list[EdgeNode] = []
    servers = [Gdnsd(base, "dns-eu", timers), Gdnsd(base, "dns-us", timers)]
    try:
        for name, (_, address) in EDGES.items():
            settings = NodeSettings(
                prefix=base / name,
                listen=f"{address}:{free_port(address)}",
                admin_listen=f"{address}:{admin_port}",
                admin_token="drain-bench-admin-token",
                workers=1,
            )
            edges.append(EdgeNode(settings).start())
        if agents:
            for server in servers:
                server.start_agent()
        inventory = write_inventory(base, servers, admin_port)
        listing = inventory_json(inventory)
        settings = fleet_dns.load_settings(inventory, fleet_dns.platform_vars(listing))
        fleet = fleet_dns.fleet_from_inventory(listing)
        zones = fleet_dns.render_zones(settings, fleet, [])
        for server in servers:
            options = fleet_dns.ServerOptions(
                (f"127.0.0.1:{server.port}",), str(server.run_dir), str(server.state_dir)
            )
            fleet_dns.write_tree(
                server.config_dir, fleet_dns.render_config(settings, fleet, options), zones
            )
            server.start()
        both, one = ["127.0.0.11", "127.0.0.13"], ["127.0.0.13"]

        def all_answer(expected: list[str]):
            def check() -> bool:
                try:
                    return all(answers(s.port) == expected for s in servers)
                except (OSError, dns.exception.DNSException):
                    return False

            return check

        wait_until(all_answer(both), time.monotonic())
        figures: dict[str, dict[str, list[float]]] = {
            action: {"command_s": [], "effective_s": [], "gdnsd_wait_s": []}
            for action in ("drain", "undrain")
        }
        # With the token the CLI edits through the agents; without, through Ansible.
        env = {**os.environ, "CDNCTL_ADMIN_TOKEN": AGENT_TOKEN if agents else ""}
        ways: set[str] = set()
        started = time.monotonic()
        subprocess.run([CDNCTL, "drain", "--help"], capture_output=True, check=True)
        cli_start = time.monotonic() - started
        for _ in range(rounds):
            for action, expected in (("drain", one), ("undrain", both)):
                started = time.monotonic()
                done = subprocess.run(
                    [CDNCTL, action, "eu-edge-1", "--inventory", str(inventory)],
                    capture_output=True,
                    text=True,
                    check=False,
                    env=env,
                )
                returned = time.monotonic() - started
                if done.returncode != 0:
                    raise RuntimeError(f"cdnctl {action} failed: {done.stdout}{done.stderr}")
                effective = wait_until(all_answer(expected), started)
                waits = [float(w) for w in re.findall(r"in force after ([0-9.]+) s", done.stdout)]
                if len(waits) != len(servers):
                    raise RuntimeError(f"cdnctl {action}: not in force everywhere: {done.stdout}")
                figures[action]["gdnsd_wait_s"].append(max(waits))
                ways.update(
                    re.findall(r"in force after [0-9.]+ s \((drain agent|Ansible)\)", done.stdout)
                )
                figures[action]["command_s"].append(round(returned, 3))
                figures[action]["effective_s"].append(round(effective, 3))
                time.sleep(0.5)
        return {
            "dns_hosts": len(servers),
            "edges": len(EDGES),
            "rounds": rounds,
            "gdnsd_timers": timers,
            "edits_via": sorted(ways),
            "target_s": 5.0,
            "load_average_1m": round(os.getloadavg()[0], 2),
            # `cdnctl drain --help`: the command's own start (Python and the modules drain
            # imports), part of each run
            "cli_start_s": round(cli_start, 3),
            **{
                action: {
                    **runs,
                    "median_effective_s": round(statistics.median(runs["effective_s"]), 3),
                    "max_effective_s": max(runs["effective_s"]),
                }
                for action, runs in figures.items()
            },
        }
    finally:
        for server in servers:
            server.stop()
        for edge in edges:
            edge.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--gdnsd-timers", action="store_true", help="gdnsd with its own admin_state timers"
    )
    parser.add_argument(
        "--no-agents", action="store_true", help="no drain agents: every edit through Ansible"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.gdnsd_timers, not args.no_agents), indent=2))


if __name__ == "__main__":
    main()
