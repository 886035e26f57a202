"""Rolling edge upgrades (ansible/rolling.yml, `cdnctl roll`): the checks around each batch.

A roll takes a region's edges N at a time out of GeoDNS, upgrades them and puts them back,
and must never fail a request. What this module decides:

- `preflight`: a roll starts only on a healthy fleet: every edge answers `/health`, runs the
  same bundle version as the others, is in DNS on every DNS host (nothing drained, nothing
  DOWN in gdnsd's view), and the batch leaves each region at least one edge in DNS.
- `verify`: after its upgrade an edge is back only when `/health` answers, it runs the
  fleet's version (its running manifest hashes to it), and a real request for every tenant
  it runs (each tenant's first exact domain, or a name under its wildcard) is answered by
  that tenant through its public listener (below 500, with the edge's X-Cache-Status).
- `in_dns`: after the undrain, the next batch waits until every DNS host sees the edge UP,
  so a region is never left with only the edge being drained next.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cdnctl.bundle.format import sha256_tag
from cdnctl.bundle.rollout import SMOKE_LABEL
from cdnctl.edge.admin_client import AdminClient, Edge, EdgeError
from cdnctl.fleet import drain
from cdnctl.fleet.dns import SERVICE_TYPE, DnsError, Fleet, Host, fleet_from_inventory
from cdnctl.fleet.dns_hosts import DnsHosts
from cdnctl.fleet.targets import ansible_tool, edges_from_inventory, inventory_json
from cdnctl.paths import project_root

HTTP_TIMEOUT = 10.0
ALL = "all"


class RollError(RuntimeError):
    """The roll cannot start or go on (the message says why and what to do)."""


@dataclass(frozen=True)
class EdgeReport:
    """What one edge says about itself (admin API) and what the DNS hosts say of it."""

    host: Host
    healthy: bool
    version: str | None
    problem: str | None = None


@dataclass
class Preflight:
    regions: list[str]
    version: str | None
    batches: dict[str, list[list[str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "regions": self.regions,
            "version": self.version,
            "batches": self.batches,
            "problems": self.problems,
        }


def load_fleet(inventory: Path) -> tuple[Fleet, dict[str, Edge]]:
    """The inventory's edges (public side, by region) and their admin endpoints."""
    data = inventory_json(inventory)
    fleet = fleet_from_inventory(data)
    admin = {edge.name: edge for edge in edges_from_inventory(inventory, ("edge",))}
    return fleet, admin


def _report(host: Host, admin: Edge, token: str) -> EdgeReport:
    try:
        with AdminClient(admin, token, timeout=HTTP_TIMEOUT) as client:
            client.health()
            version = client.running_config().get("version")
    except EdgeError as exc:
        return EdgeReport(host, False, None, f"{host.name}: admin API {admin.url}: {exc}")
    return EdgeReport(host, True, version if isinstance(version, str) else None)


def edge_reports(fleet: Fleet, admin: dict[str, Edge], token: str) -> list[EdgeReport]:
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(fleet.edges)))) as pool:
        return list(pool.map(lambda h: _report(h, admin[h.name], token), fleet.edges))


def dns_views(hosts: DnsHosts) -> dict[str, dict[str, Any]]:
    """Each DNS host's `gdnsdctl states` ({resource: {state, real_state}}); DnsError if a
    host cannot be read."""
    results = hosts.states()
    failed = [r for r in results if not r.ok]
    if failed or not results:
        details = "; ".join(f"{r.host}: {r.error}" for r in failed) or "no host in group dns"
        raise DnsError(f"cannot read gdnsd's states on every DNS host: {details}")
    return {r.host: json.loads(r.stdout) for r in results}


def edge_state(views: dict[str, dict[str, Any]], address: str) -> dict[str, str]:
    """DNS host -> the state gdnsd answers from for the edge at `address` ("-" if unknown)."""
    key = f"{address}/{SERVICE_TYPE}"
    return {dns_host: str(view.get(key, {}).get("state", "-")) for dns_host, view in views.items()}


def batches_of(names: Sequence[str], size: int) -> list[list[str]]:
    return [list(names[i : i + size]) for i in range(0, len(names), size)]


def preflight(inventory: Path, target: str, batch: int, token: str) -> Preflight:
    """Whether a roll of `target` (a region or `all`) in batches of `batch` may start."""
    fleet, admin = load_fleet(inventory)
    regions = sorted({edge.region for edge in fleet.edges})
    if target != ALL and target not in regions:
        raise RollError(
            f"{target!r} is not a region of {inventory} (regions: {', '.join(regions)}; or {ALL!r})"
        )
    chosen = regions if target == ALL else [target]
    result = Preflight(regions=chosen, version=None)
    if batch < 1:
        result.problems.append(f"--batch {batch}: must be at least 1")
        return result
    for region in chosen:
        names = [edge.name for edge in fleet.edges_of(region)]
        result.batches[region] = batches_of(names, batch)
        if batch >= len(names):
            result.problems.append(
                f"region {region}: --batch {batch} would drain all {len(names)} of its edges "
                f"at once; use --batch {max(1, len(names) - 1)} or less"
            )
    reports = edge_reports(fleet, admin, token)
    for report in reports:
        if not report.healthy:
            result.problems.append(f"fleet degraded: {report.problem}")
    versions = sorted({r.version or "none" for r in reports if r.healthy})
    if len(versions) > 1:
        per = ", ".join(f"{r.host.name}={r.version}" for r in reports if r.healthy)
        result.problems.append(
            f"fleet degraded: edges run different bundles ({per}): bring them to one version "
            "first (cdnctl apply or ansible/tenants.yml)"
        )
    result.version = versions[0] if len(versions) == 1 and versions[0] != "none" else None
    hosts = DnsHosts(inventory)
    try:
        drains = drain.current_state(hosts).drains
        views = dns_views(hosts)
    except DnsError as exc:
        result.problems.append(f"fleet degraded: {exc}")
        return result
    for name in sorted(drains.edges):
        result.problems.append(
            f"fleet degraded: edge {name} is drained in GeoDNS (an unfinished roll?): check "
            f"it, then `cdnctl undrain {name}` and start the roll again"
        )
    for name in sorted(drains.regions):
        result.problems.append(f"fleet degraded: region {name} is drained in GeoDNS")
    for edge in fleet.edges:
        down = {h: s for h, s in edge_state(views, edge.address).items() if s != "UP"}
        if down and edge.name not in drains.edges:
            result.problems.append(
                f"fleet degraded: DNS hosts do not see {edge.name} ({edge.address}) UP: {down}"
            )
    return result


def tenant_hosts(manifest: dict[str, Any]) -> dict[str, str]:
    """Tenant id -> a host name that routes to it (first exact domain, else one under its
    first wildcard), from a running manifest."""
    names: dict[str, str] = {}
    for host, tenant in sorted(manifest.get("hosts", {}).items()):
        names.setdefault(tenant, host)
    for suffix, tenant in sorted(manifest.get("wildcards", {}).items()):
        names.setdefault(tenant, f"{SMOKE_LABEL}.{suffix}")
    for tenant in manifest.get("tenants", {}):
        names.setdefault(tenant, "")
    return names


def _tenant_request(client: httpx.Client, address: str, tenant: str, host: str) -> str | None:
    if not host:
        return f"tenant {tenant}: no domain in the running manifest"
    try:
        response = client.get(f"http://{address}/", headers={"Host": host})
    except httpx.HTTPError as exc:
        return f"tenant {tenant} (Host {host}): {type(exc).__name__}: {exc}"
    if response.status_code >= 500 or "x-cache-status" not in response.headers:
        return (
            f"tenant {tenant} (Host {host}): HTTP {response.status_code} "
            f"(X-Cache-Status {response.headers.get('x-cache-status', 'missing')})"
        )
    return None


def verify(inventory: Path, name: str, version: str | None, token: str) -> list[str]:
    """Problems with edge `name` after its upgrade (empty: it may go back into DNS)."""
    fleet, admin = load_fleet(inventory)
    host = fleet.edge(name)
    if host is None or name not in admin:
        raise RollError(f"{name} is not an edge of {inventory}")
    try:
        with AdminClient(admin[name], token, timeout=HTTP_TIMEOUT) as client:
            client.health()
            running = client.running_config().get("version")
            manifest_bytes = client.running_manifest()
    except EdgeError as exc:
        return [f"{name}: admin API {admin[name].url}: {exc}"]
    problems = []
    if version and running != version:
        problems.append(f"{name} runs bundle {running}, the fleet runs {version}")
    if manifest_bytes is None:
        return [*problems, f"{name}: no running manifest (no bundle applied?)"]
    if sha256_tag(manifest_bytes) != running:
        problems.append(f"{name}: its running manifest does not hash to its version {running}")
    manifest = json.loads(manifest_bytes)
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for tenant, tenant_host in sorted(tenant_hosts(manifest).items()):
            problem = _tenant_request(client, host.address, tenant, tenant_host)
            if problem:
                problems.append(f"{name}: {problem}")
    return problems


def wait_in_dns(
    inventory: Path,
    name: str,
    timeout: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, str]:
    """Until every DNS host answers with edge `name` UP (or `timeout`): the last view."""
    fleet, _ = load_fleet(inventory)
    host = fleet.edge(name)
    if host is None:
        raise RollError(f"{name} is not an edge of {inventory}")
    hosts = DnsHosts(inventory)
    deadline = clock() + timeout
    while True:
        states = edge_state(dns_views(hosts), host.address)
        if all(state == "UP" for state in states.values()) or clock() > deadline:
            return states
        sleep(1.0)


@dataclass(frozen=True)
class RegionRoll:
    region: str
    seconds: float
    ok: bool
    log: Path
    stopped: str | None = None  # what stopped it and how to resume (rolling.yml's rescue)


def run_roll(
    inventory: Path,
    regions: Sequence[str],
    *,
    batch: int,
    restart: bool,
    env: dict[str, str],
    echo: Callable[[str], None],
    extra_vars: Sequence[str] = (),
) -> list[RegionRoll]:
    """ansible/rolling.yml once per region, in order; stops at the first region that fails
    (its `stopped` says where and how to resume). Each region's log is
    $TMPDIR/cdnctl-roll-<region>.log."""
    tmp = Path(env.get("TMPDIR", "/tmp"))
    done: list[RegionRoll] = []
    for region in regions:
        log, report = tmp / f"cdnctl-roll-{region}.log", tmp / f"cdnctl-roll-{region}.stopped"
        report.unlink(missing_ok=True)
        argv = [
            ansible_tool("ansible-playbook"),
            "rolling.yml",
            "-i",
            str(inventory.resolve()),
            "-e",
            f"roll_region={region}",
            "-e",
            f"roll_batch={batch}",
            "-e",
            f"roll_restart={str(restart).lower()}",
            *(arg for var in extra_vars for arg in ("-e", var)),
        ]
        echo(f"{region}: ansible-playbook {' '.join(argv[1:])} (log: {log})")
        start = time.monotonic()
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                argv,
                cwd=project_root() / "ansible",
                env={**env, "CDNCTL_ROLL_REPORT": str(report)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if line.startswith("TASK [") and not line.startswith("TASK [Gathering"):
                    task = line[6:].split("]")[0]
                    echo(f"{region}: {time.monotonic() - start:5.0f} s  {task}")
            code = proc.wait()
        stopped = report.read_text(encoding="utf-8").strip() if report.exists() else None
        report.unlink(missing_ok=True)
        if code != 0 and not stopped:
            stopped = f"ansible-playbook rolling.yml failed (exit {code}): read {log}"
        done.append(RegionRoll(region, time.monotonic() - start, code == 0, log, stopped))
        if code != 0:
            break
    return done
