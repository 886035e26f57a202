"""`cdnctl sync`: the pull-based GitOps reconciler that runs on the control node.

One cycle (`Syncer.cycle`): fetch the branch into a work tree; when it names a commit not
yet handled, validate it fleet-wide (domain conflicts reported on the files the commit
adds or edits), compile, resolve every secret, then, in the safe order:
1. DNS hosts (inventory group `dns`): names the commit removes leave the zones
   (`zones_push`, the geodns role's layout);
2. shields (group `shield`: the tier the canaries' misses go through; they serve no client
   and are rolled back with the canaries) and canaries (one reachable edge per region, all
   regions) take the bundle at once;
3. once every shield has it, the canaries must pass `canary.check_canary` (a smoke request
   and a 5xx window) for every tenant they did not run as it is now;
4. the other edges in parallel;
5. DNS hosts: the names the commit adds enter the zones;
6. certificates (with `group_vars/all/certificates.yml`): `certificates.converge` issues
   what new ACME tenants lack (the CA resolves their names, now on DNS, and reaches an edge
   that serves their HTTP-01 tokens: every edge does) and gives every edge exactly the
   wanted certificates, before the customers move their traffic (their CNAMEs).
Every edge records the commit (`X-Cdnctl-Commit`, shown by `GET /config`), and the state
file records the last good commit and its bundle.

A commit that is invalid, whose secrets do not resolve, whose canary fails or whose apply
or DNS change fails is rejected: every edge that took it goes back to the last good bundle
(the other edges never see it), DNS back to the last good zones, the rejection is logged
and counted; the next commit is handled normally. The same commit is tried again (with
backoff: RETRIED) only when the rejection may not be its fault: a secret the control node
lacks, an edge or DNS host failing its apply.
An edge that cannot be reached is skipped (logged), not a failure: each cycle compares
every edge's running version with the last good one and brings a drifted or returning
edge back to it; a DNS host that cannot be reached is skipped likewise and given the last
good commit's zones when it returns (and every DNS host is checked every DNS_RECHECK
seconds). When no edge answers at all, nothing is recorded: the commit is tried (and
canaried) again next cycle.

Removing a tenant file removes the tenant from the bundle; an edge drops (and purges) the
tenants a bundle no longer holds when it applies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdnctl.bundle.compile import compile_paths
from cdnctl.bundle.delta import resolved_bundle
from cdnctl.bundle.git_command import GIT_TIMEOUT, GitError, git
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.bundle.plan import changed_files
from cdnctl.bundle.secrets import SecretResolutionError, resolve_secrets
from cdnctl.edge.admin_client import DEFAULT_ADMIN_PORT, AdminClient, Edge, EdgeError
from cdnctl.edge.push import Pusher
from cdnctl.fleet import certificates
from cdnctl.fleet.canary import Ran, TargetTenants, check_canary
from cdnctl.fleet.dns import DnsError, tenant_names
from cdnctl.fleet.dns_hosts import HostResult
from cdnctl.fleet.sync_state import GoodBundle, GoodCommit, Rejected, SyncState
from cdnctl.fleet.targets import host_url, inventory_json
from cdnctl.fleet.zones_push import DnsZones, ZonesError, ZoneSet, kept_names, names_of_bundle
from cdnctl.tenants.policy import PolicyError, load_policy

DEFAULT_PUBLIC_PORT = 80
REASONS = ("fetch", "unreachable", "invalid", "secrets", "dns", "canary", "apply", "rollback")


class SyncError(RuntimeError):
    """A cycle could not run at all (bad inventory, git failure): nothing was applied."""


@dataclass(frozen=True)
class FleetEdge:
    edge: Edge  # admin API
    region: str
    public_url: str  # the public listener, where tenants' traffic goes ("" for a shield)
    shield: bool = False  # a shield: the tier behind a region's edges

    @property
    def name(self) -> str:
        return self.edge.name


def fleet_from_inventory(inventory: Path, data: Mapping[str, Any]) -> list[FleetEdge]:
    """The `edge` and `shield` groups of an inventory's `ansible-inventory --list` document:
    admin URL (cdn_private_address, cdn_admin_api_port), region (cdn_region) and, for edges,
    the public listener (cdn_public_address, cdn_public_http_port)."""
    hostvars = data.get("_meta", {}).get("hostvars", {})
    fleet = []
    for group in ("edge", "shield"):
        for host in data.get(group, {}).get("hosts", []):
            hv = hostvars.get(host, {})
            needed = ("cdn_region", "cdn_public_address") if group == "edge" else ("cdn_region",)
            missing = [key for key in needed if key not in hv]
            if missing:
                raise SyncError(
                    f"{inventory}: {group} {host} has no {', '.join(missing)}: every edge needs "
                    "its region and public address, every shield its region "
                    "(see fleet/inventory.py)"
                )
            port = hv.get("cdn_admin_api_port", DEFAULT_ADMIN_PORT)
            public = ""
            if group == "edge":
                public_port = hv.get("cdn_public_http_port", DEFAULT_PUBLIC_PORT)
                public = f"http://{hv['cdn_public_address']}:{public_port}"
            edge = Edge(host, host_url(host, hv, port))
            fleet.append(FleetEdge(edge, str(hv["cdn_region"]), public, group == "shield"))
    if not any(not node.shield for node in fleet):
        raise SyncError(f"{inventory}: no hosts in group edge")
    return fleet


@dataclass(frozen=True)
class Topology:
    edges: list[FleetEdge]
    zones: DnsZones | None  # None: the inventory has no dns group (or its settings fail)
    listing: Mapping[str, Any]  # its `ansible-inventory --list`


@dataclass(frozen=True)
class ZonePlan:
    dns: DnsZones
    before: ZoneSet | None  # the last good commit's (None: none applied yet)
    kept: ZoneSet | None  # names in both: served while the edges change
    after: ZoneSet  # this commit's


@dataclass
class SyncSettings:
    repo: str  # path or URL git can clone (a bare repository is fine)
    branch: str
    inventory: Path
    workdir: Path  # the clone, the compile cache
    state_file: Path
    token: str
    tenants_dir: str = "tenants"  # inside the repository
    vault_secret: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # Seconds the changed tenants' 5xx ratio is watched on the canaries (all regions' at
    # once): short, as a commit is to be live everywhere within seconds.
    canary_window: float = 1.0
    max_error_ratio: float = 0.05
    parallel: int = 8  # edges pushed at once after the canaries


@dataclass
class CycleResult:
    commit: str | None
    # "applied", "caught_up", "unchanged"; "rejected" (not tried again) or "waiting" (no
    # edge answered: tried again next cycle)
    outcome: str
    reason: str = ""
    detail: str = ""
    edges: dict[str, str] = field(default_factory=dict)  # edge -> what happened

    @property
    def ok(self) -> bool:
        return self.outcome not in ("rejected", "waiting")


@dataclass(frozen=True)
class CanaryTrial:
    took: bool  # the canary runs the new bundle (to roll back on failure)
    what: str  # for CycleResult.edges
    changed: int = 0  # tenants the bundle adds or changes on this canary
    failure: str = ""  # why the canary failed, "" when it passed


class SyncMetrics:
    """cdn_sync_* counters for the /metrics endpoint (Prometheus text format)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.failures: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.cycles = 0

    def record(self, result: CycleResult) -> None:
        with self._lock:
            self.cycles += 1
            if result.ok:
                self.last_success = time.time()
            else:
                self.failures[result.reason] = self.failures.get(result.reason, 0) + 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP cdn_sync_last_success_timestamp_seconds End of the last cycle that "
                "left the fleet on a good commit.",
                "# TYPE cdn_sync_last_success_timestamp_seconds gauge",
                f"cdn_sync_last_success_timestamp_seconds {self.last_success or 0:.3f}",
                "# HELP cdn_sync_failures_total Commits rejected, by reason.",
                "# TYPE cdn_sync_failures_total counter",
                *(
                    f'cdn_sync_failures_total{{reason="{reason}"}} {count}'
                    for reason, count in sorted(self.failures.items())
                ),
                "# HELP cdn_sync_cycles_total Sync cycles run.",
                "# TYPE cdn_sync_cycles_total counter",
                f"cdn_sync_cycles_total {self.cycles}",
            ]
        return "\n".join(lines) + "\n"


def log_event(event: str, **fields: Any) -> None:
    """One JSON line on stderr: the structured log of the sync loop."""
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    print(json.dumps(record, sort_keys=True, default=str), file=sys.stderr, flush=True)


# Seconds the sync gives git: a fetch or clone may move the whole history of 1M tenants,
# and the first checkout writes 1M files (more than git's usual 120 s on 2 cores). git
# cannot wait on a prompt here (git_command), so only a stalled remote or disk runs this out.
FETCH_TIMEOUT = 900
CHECKOUT_TIMEOUT = 1800


def _git(cwd: Path, *args: str, timeout: float = GIT_TIMEOUT) -> str:
    try:
        return git(cwd, *args, timeout=timeout).decode().strip()
    except GitError as exc:
        raise SyncError(f"git {' '.join(args)} in {cwd}: {exc}") from None


# A converge is run again after this long even when nothing changed (an edge replaced by
# hand, a failed order's back-off over).
CERTIFICATES_RECHECK = 600.0
# Rejections the commit may not be at fault for (a secret missing on the control node, an
# edge or DNS host failing its apply): the same commit is tried again after RETRY_FIRST
# seconds, then twice as long each time, up to RETRY_MAX. An invalid commit or a failed
# canary is not tried again: the next commit is.
RETRIED = frozenset({"secrets", "apply", "dns"})
RETRY_FIRST = 30.0
RETRY_MAX = 600.0
# Seconds between checks that every DNS host serves the last good zone set (a host changed
# by hand or by the role, or one that missed a push while this loop was not running); a
# host that was unreachable at a push is caught up on the next cycle.
DNS_RECHECK = 300.0


def certificates_key(wanted: list[certificates.Wanted], edges: list[Edge]) -> str:
    """What a certificates.converge is asked for: each wanted certificate (a custom one by
    its files' contents) and the edges it goes to."""
    digest = hashlib.sha256()
    for want in wanted:
        chain = want.cert_file
        held = chain.read_bytes() if chain and chain.is_file() else b""
        contents = hashlib.sha256(held).hexdigest()
        record = [want.tenant, want.kind, want.names, want.skipped, want.challenge, contents]
        record.append(hashlib.sha256((want.key_vault or "").encode()).hexdigest())
        digest.update(json.dumps(record, default=str).encode() + b"\n")
    digest.update(json.dumps(sorted((e.name, e.url) for e in edges)).encode())
    return digest.hexdigest()


def retry_due(rejected: Rejected, now: float) -> bool:
    """Whether a rejected commit is tried again now (RETRIED reasons, with backoff)."""
    if rejected.reason not in RETRIED:
        return False
    wait = min(RETRY_MAX, RETRY_FIRST * 2 ** (rejected.attempts - 1))
    return now - rejected.at >= wait


class Syncer:
    def __init__(self, settings: SyncSettings, metrics: SyncMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or SyncMetrics()
        self.state = SyncState(settings.state_file)
        self.clone = settings.workdir / "repo"
        self.cache_dir = settings.workdir / "cache"
        self._lock = threading.Lock()  # one cycle at a time (timer and webhook)
        self._inventory: tuple[tuple[tuple[str, int], ...], Topology] | None = None
        # What the last certificates.converge that succeeded was asked for, and when.
        self._certificates_done: tuple[str, float] | None = None
        # DNS hosts that missed the last zone set they were sent, and when every DNS host
        # was last checked (0: at the first cycle).
        self._dns_behind: set[str] = set()
        self._dns_checked = 0.0

    # -- git ---------------------------------------------------------------------------
    def fetch(self) -> str:
        """Bring the work tree to the tip of the branch; returns its commit."""
        branch = self.settings.branch
        if not (self.clone / ".git").is_dir():
            self.clone.parent.mkdir(parents=True, exist_ok=True)
            _git(
                self.clone.parent,
                *("clone", "--quiet", "--no-checkout", self.settings.repo, "repo"),
                timeout=FETCH_TIMEOUT,
            )
        else:  # a state dir kept across a change of --repo follows the new one
            _git(self.clone, "remote", "set-url", "origin", self.settings.repo)
        _git(
            self.clone,
            "fetch",
            "--quiet",
            "--force",
            "origin",
            f"+refs/heads/{branch}:refs/sync/tip",
            timeout=FETCH_TIMEOUT,
        )
        _git(
            self.clone,
            *("checkout", "--quiet", "--force", "--detach", "refs/sync/tip"),
            timeout=CHECKOUT_TIMEOUT,
        )
        return _git(self.clone, "rev-parse", "HEAD")

    # -- one cycle ---------------------------------------------------------------------
    def cycle(self) -> CycleResult:
        with self._lock:
            started = time.perf_counter()
            result = self._cycle()
            self.metrics.record(result)
            log_event(
                "sync_cycle",
                commit=result.commit,
                outcome=result.outcome,
                reason=result.reason or None,
                detail=result.detail or None,
                edges=result.edges,
                seconds=round(time.perf_counter() - started, 3),
            )
            return result

    def topology(self) -> Topology:
        """The inventory's edges and DNS hosts, read again only when one of its files
        changed (`ansible-inventory` takes about a second: most of an idle cycle)."""
        inventory = self.settings.inventory
        files = [inventory] if inventory.is_file() else sorted(inventory.rglob("*"))
        key = tuple((str(path), path.stat().st_mtime_ns) for path in files if path.is_file())
        if self._inventory is None or self._inventory[0] != key:
            try:
                listing = inventory_json(inventory)
            except ValueError as exc:
                raise SyncError(str(exc)) from None
            zones = None
            if listing.get("dns", {}).get("hosts"):
                try:
                    zones = DnsZones(inventory, listing)
                except DnsError as exc:
                    log_event("sync_dns_skipped", reason=f"the DNS settings do not load: {exc}")
            fleet = fleet_from_inventory(inventory, listing)
            self._inventory = (key, Topology(fleet, zones, listing))
        return self._inventory[1]

    def _cycle(self) -> CycleResult:
        topology = self.topology()
        fleet = topology.edges
        try:
            commit = self.fetch()
        except SyncError as exc:
            return CycleResult(None, "rejected", "fetch", str(exc))
        good = self.state.last_good
        rejected = self.state.last_rejected
        if rejected and rejected.commit == commit and retry_due(rejected, time.time()):
            log_event(
                "sync_retry", commit=commit, reason=rejected.reason, attempt=rejected.attempts + 1
            )
            return self._apply_commit(topology, commit)
        if (good and good.commit == commit) or (rejected and rejected.commit == commit):
            result = self._catch_up(fleet, commit)
            caught = self._catch_up_dns(topology.zones)
            if caught and result.outcome == "unchanged":
                return CycleResult(commit, "caught_up", edges=caught)
            result.edges.update(caught)
            return result
        return self._apply_commit(topology, commit)

    def _catch_up(self, fleet: list[FleetEdge], commit: str) -> CycleResult:
        """Bring every reachable edge whose running version differs from the last good one
        back to it (an edge that was down, or changed by hand)."""
        good, bundle = self.state.last_good, self.state.good_bundle()
        if good is None or bundle is None:
            return CycleResult(commit, "unchanged", detail="no good commit applied yet")
        running = self._running(fleet)
        drifted = [
            edge
            for edge in fleet
            if running[edge.name] is not None and running[edge.name].get("version") != good.version
        ]
        if not drifted:
            return CycleResult(commit, "unchanged")
        pusher = self._pusher(bundle, good.version)
        edges = self._push_all(drifted, pusher, good.commit)
        back = [edge for edge in drifted if edges[edge.name].startswith("sent")]
        if back:  # and the certificates it missed
            self._certificates(good.commit, bundle.bundle, back)
        return CycleResult(commit, "caught_up", edges=edges)

    def _apply_commit(self, topology: Topology, commit: str) -> CycleResult:
        fleet = topology.edges
        phases: list[tuple[str, float]] = []  # in the order they ran (a log is sorted)
        clock = time.perf_counter()

        def phase(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            phases.append((name, round(now - clock, 3)))
            clock = now

        tenants = self.clone / self.settings.tenants_dir
        try:
            policy = load_policy(self.settings.inventory)
        except PolicyError as exc:
            raise SyncError(str(exc)) from None  # the inventory's fault, not the commit's
        changed: set[str] = set()
        good = self.state.last_good
        if good is not None and tenants.is_dir():
            try:
                changed = changed_files(good.commit, tenants)
            except GitError:
                changed = set()  # the last good commit is gone (force-push): whole-fleet view
        if tenants.is_dir():  # the clone: only fetch's `git checkout --force` writes there
            compiled = compile_paths(
                [tenants], policy, cache_dir=self.cache_dir, changed=changed, checkout_clean=True
            )
        else:
            compiled = None
        phase("validate_compile")
        if (
            compiled is None
            or not compiled.ok
            or compiled.bundle is None
            or compiled.version is None
        ):
            problems = compiled.problems if compiled else []
            detail = (
                "; ".join(p.render() for p in problems[:20])
                if problems
                else f"{self.settings.tenants_dir}/ is not a directory in the repository"
            )
            return self._reject(commit, "invalid", detail)
        try:
            pusher = self._pusher(
                GoodBundle(compiled.bundle, compiled.manifest or b""),
                compiled.version,
                compiled.patched,
            )
        except SecretResolutionError as exc:
            return self._reject(commit, "secrets", str(exc))
        phase("secrets")
        targets = TargetTenants(compiled)
        running = self._running(fleet)
        reachable = [edge for edge in fleet if running[edge.name] is not None]
        down = {edge.name: "unreachable" for edge in fleet if running[edge.name] is None}
        if all(edge.shield for edge in reachable):  # tried again next cycle, canaried then
            return CycleResult(commit, "waiting", "unreachable", "no edge answered", down)
        zones = self._zone_plan(topology.zones, compiled.results)
        phase("plan")
        restore: tuple[DnsZones, ZoneSet] | None = None
        if zones is not None and zones.before is not None and zones.kept != zones.before:
            # Removed names leave DNS before the edges drop their tenants.
            try:
                self._install_zones(zones.dns, zones.kept)
            except ZonesError as exc:
                return self._reject(commit, "dns", f"removing names from DNS: {exc}")
            restore = (zones.dns, zones.before)
            phase("dns_remove")
        edges: dict[str, str] = dict(down)
        # The shields and one canary per region take the commit at once; the canaries are
        # checked once every shield has it (their misses go through the shields). Shields
        # serve no client, and go back with the canaries when the commit is rejected.
        shields = [edge for edge in reachable if edge.shield]
        canaries: list[FleetEdge] = []
        for edge in reachable:
            if not edge.shield and edge.region not in {c.region for c in canaries}:
                canaries.append(edge)
        patched_from = compiled.patched[0] if compiled.patched else None
        first = self._pool_map(
            lambda edge: self._take(edge, pusher, commit, patched_from), shields + canaries
        )
        taken = dict(zip((edge.name for edge in shields + canaries), first, strict=True))
        edges.update({name: what for name, (what, _) in taken.items()})
        applied: list[FleetEdge] = canaries + [
            edge for edge in shields if not taken[edge.name][0].startswith("failed")
        ]
        failed = [f"{edge.name}: {taken[edge.name][0]}" for edge in shields if edge not in applied]
        if failed:
            return self._rollback(commit, "apply", "; ".join(failed), applied, edges, restore)
        phase("shields_canaries")
        trials = self._pool_map(
            lambda canary: self._check_canary(canary, taken[canary.name], targets),
            canaries,
        )
        edges.update(
            {canary.name: trial.what for canary, trial in zip(canaries, trials, strict=True)}
        )
        changed_count = max((trial.changed for trial in trials), default=0)
        failed_canaries = [
            f"{canary.name}: {trial.failure}"
            for canary, trial in zip(canaries, trials, strict=True)
            if trial.failure
        ]
        if failed_canaries:
            return self._rollback(
                commit, "canary", "; ".join(failed_canaries), applied, edges, restore
            )
        phase("canary")
        rest = [edge for edge in reachable if edge not in canaries and not edge.shield]
        results = self._push_all(rest, pusher, commit)
        edges.update(results)
        failed = [name for name, what in results.items() if what.startswith("failed")]
        applied += [edge for edge in rest if edge.name not in failed]
        if failed:
            detail = "; ".join(f"{name}: {results[name]}" for name in failed)
            return self._rollback(commit, "apply", detail, applied, edges, restore)
        phase("apply")
        # New tenants are on every edge: DNS may point at them, then their certificates
        # (the CA's HTTP-01 check resolves their names and reaches any edge).
        if zones is not None and zones.after != zones.kept:
            try:
                self._install_zones(zones.dns, zones.after)
            except ZonesError as exc:
                if zones.before is not None:
                    restore = (zones.dns, zones.before)
                return self._rollback(
                    commit, "dns", f"adding names to DNS: {exc}", applied, edges, restore
                )
            phase("dns_add")
        self._certificates(commit, compiled.bundle, reachable)
        phase("certificates")
        self.state.record_good(
            GoodCommit(commit, compiled.version, time.time()),
            GoodBundle(compiled.bundle, compiled.manifest or b""),
        )
        log_event(
            "sync_applied",
            commit=commit,
            version=compiled.version,
            tenants=len(compiled.results),
            tenants_changed=changed_count,
            edges=len(applied),
            edges_down=sorted(down),
            phases=phases,
        )
        return CycleResult(commit, "applied", edges=edges)

    # -- helpers -----------------------------------------------------------------------
    def _install_zones(
        self, dns: DnsZones, zone_set: ZoneSet, only: list[str] | None = None
    ) -> list[HostResult]:
        """Put `zone_set` in service on the DNS hosts (ZonesError when one refuses it); the
        ones that cannot be reached are noted, to be caught up."""
        results = dns.install(zone_set, only)
        away = sorted(r.host for r in results if r.unreachable)
        self._dns_behind.difference_update(r.host for r in results if not r.unreachable)
        self._dns_behind.update(away)
        if away:
            log_event("sync_dns_unreachable", zones=zone_set.digest, hosts=away)
        return results

    def _catch_up_dns(self, dns: DnsZones | None) -> dict[str, str]:
        """Give the DNS hosts that missed a zone set (every DNS host, each DNS_RECHECK
        seconds) the last good commit's zones: {host: "zones: installed"} for those that
        had to change."""
        good = self.state.good_bundle()
        now = time.monotonic()
        recheck = not self._dns_checked or now - self._dns_checked >= DNS_RECHECK
        if dns is None or good is None or not (self._dns_behind or recheck):
            return {}
        if recheck:
            self._dns_checked = now
        zone_set = dns.render(names_of_bundle(good.bundle))
        only = None if recheck else sorted(self._dns_behind)
        try:
            results = self._install_zones(dns, zone_set, only)
        except ZonesError as exc:  # refused: not tried again before the next recheck
            self._dns_behind.clear()
            log_event("sync_dns_catch_up_failed", zones=zone_set.digest, error=str(exc))
            return {}
        caught = {
            r.host: "zones: installed" for r in results if r.stdout.strip().endswith("installed")
        }
        if caught:
            log_event("sync_dns_caught_up", zones=zone_set.digest, hosts=sorted(caught))
        return caught

    def _zone_plan(self, dns: DnsZones | None, results: list[Any]) -> ZonePlan | None:
        """The zone sets of the last good commit, of the names it shares with this one, and
        of this one (None without DNS hosts)."""
        if dns is None:
            return None
        after_names = tenant_names(results)
        good = self.state.good_bundle()
        if good is None:  # what DNS serves now is unknown: only the final set, after edges
            return ZonePlan(dns, None, None, dns.render(after_names))
        before_names = names_of_bundle(good.bundle)
        return ZonePlan(
            dns,
            dns.render(before_names),
            dns.render(kept_names(before_names, after_names)),
            dns.render(after_names),
        )

    def _certificates(self, commit: str, bundle: bytes, edges: list[FleetEdge]) -> None:
        """Issue the certificates new ACME tenants lack and give every edge exactly the
        wanted ones (`certificates.converge`, as `cdnctl certs issue`). A failed order is
        logged, not a rejection: the order backs off and the next commit tries again."""
        inventory = self.settings.inventory
        if not (inventory / certificates.SETTINGS_FILE).is_file():
            log_event(
                "sync_certificates_skipped",
                commit=commit,
                reason=f"{inventory / certificates.SETTINGS_FILE} (cdn_acme) not found: "
                "create it for sync to issue certificates, or run `cdnctl certs issue`",
            )
            return
        try:
            settings = certificates.load_settings(inventory)
            tenants = json.loads(bundle)["tenants"]
            base = (self.clone / self.settings.tenants_dir).parent
            wanted = certificates.wanted_certificates(tenants, base)
            publish = None
            if settings.platform_wildcard:
                listing = self.topology().listing  # read once per inventory change
                platform, publish = certificates.platform_from_inventory(inventory, listing)
                wanted.append(platform)
            targets = [edge.edge for edge in edges if not edge.shield]  # as `certs issue`
            key = certificates_key(wanted, targets)
            done = self._certificates_done
            if done and done[0] == key and time.monotonic() - done[1] < CERTIFICATES_RECHECK:
                # The same certificates for the same edges as the last converge that
                # succeeded: nothing to issue or send (about 1 s of every cycle otherwise).
                log_event("sync_certificates", commit=commit, ok=True, unchanged=True)
                return
            report = certificates.converge(
                wanted,
                settings,
                targets,
                self.settings.token,
                renew=False,
                vault_secret=self.settings.vault_secret,
                publish_dns=publish,
            )
        except (certificates.CertificateError, DnsError) as exc:
            log_event("sync_certificates_failed", commit=commit, error=str(exc))
            return
        self._certificates_done = (key, time.monotonic()) if report.ok else None
        log_event(
            "sync_certificates",
            commit=commit,
            ok=report.ok,
            issued=report.issued,
            errors={t.tenant: t.error for t in report.tenants if t.error},
            edges_failed={e.edge: e.error for e in report.edges if not e.ok},
        )

    def _pusher(
        self, bundle: GoodBundle, version: str, patched: tuple[str, frozenset[str]] | None = None
    ) -> Pusher:
        environ, secret = self.settings.environ, self.settings.vault_secret

        def resolver(document: dict[str, Any]) -> dict[str, Any]:
            return resolve_secrets(document, environ, vault_secret=secret)

        pusher = Pusher(
            bundle.bundle,
            bundle.manifest,
            version,
            ManifestStore(self.cache_dir),
            resolver,
            lambda: resolved_bundle(bundle.bundle, resolver),
            patched,
        )
        pusher.prepare()
        return pusher

    def _pool_map(self, work: Callable[[FleetEdge], Any], edges: list[FleetEdge]) -> list[Any]:
        """`work` on every edge at once (at most `parallel`), results in `edges`' order."""
        if not edges:
            return []
        workers = max(1, min(self.settings.parallel, len(edges)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(work, edges))

    def _running(self, fleet: list[FleetEdge]) -> dict[str, dict[str, Any] | None]:
        """Each edge's GET /config, None when it cannot be reached or does not answer."""

        def one(edge: FleetEdge) -> dict[str, Any] | None:
            try:
                with AdminClient(edge.edge, self.settings.token, timeout=10.0) as client:
                    return client.running_config()
            except EdgeError:
                return None

        return dict(zip((e.name for e in fleet), self._pool_map(one, fleet), strict=True))

    def _take(
        self, edge: FleetEdge, pusher: Pusher, commit: str, patched_from: str | None = None
    ) -> tuple[str, Ran | None]:
        """Push to a shield or a canary: (what happened, what a canary ran before: its
        version, and its tenants' digests unless it ran `patched_from`, the bundle this
        commit's compile patched, whose differences the compile knows). A canary whose
        push failed may have taken it: it is rolled back too."""
        before: Ran | None = None
        try:
            with AdminClient(edge.edge, self.settings.token) as client:
                running = None
                if not edge.shield:
                    running = client.running_config()
                    version = running.get("version")
                    before = Ran(version, None)
                    if version is None or version != patched_from:
                        before = Ran(version, client.running_tenants().get("tenants") or {})
                answer = pusher.push(client, commit, running)
        except EdgeError as exc:
            if edge.shield and exc.status is None:
                return "unreachable", None
            return f"failed: {exc}", before
        return f"{'' if edge.shield else 'canary: '}sent {answer.get('sent')}", before

    def _check_canary(
        self,
        canary: FleetEdge,
        taken: tuple[str, Ran | None],
        targets: TargetTenants,
    ) -> CanaryTrial:
        """Smoke-test (and watch) the tenants the canary did not run as they are now."""
        what, before = taken
        if what.startswith("failed"):
            return CanaryTrial(True, f"canary: {what}", failure=f"apply {what}")
        changed = targets.changed_since(before or Ran(None, {}))
        with AdminClient(canary.edge, self.settings.token) as client:
            verdict = check_canary(
                client,
                canary.public_url,
                changed,
                window=self.settings.canary_window,
                max_error_ratio=self.settings.max_error_ratio,
            )
        if verdict.ok:
            return CanaryTrial(True, what, len(changed))
        return CanaryTrial(True, what, len(changed), f"{verdict.reason}: {verdict.detail}")

    def _push_all(self, edges: list[FleetEdge], pusher: Pusher, commit: str) -> dict[str, str]:
        def one(edge: FleetEdge) -> str:
            try:
                with AdminClient(edge.edge, self.settings.token) as client:
                    return f"sent {pusher.push(client, commit).get('sent')}"
            except EdgeError as exc:
                return "unreachable" if exc.status is None else f"failed: {exc}"

        return dict(zip((e.name for e in edges), self._pool_map(one, edges), strict=True))

    def _reject(
        self, commit: str, reason: str, detail: str, edges: dict[str, str] | None = None
    ) -> CycleResult:
        last = self.state.last_rejected
        attempts = last.attempts + 1 if last and last.commit == commit else 1
        self.state.record_rejected(Rejected(commit, reason, time.time(), attempts))
        return CycleResult(commit, "rejected", reason, detail, edges or {})

    def _rollback(
        self,
        commit: str,
        reason: str,
        detail: str,
        applied: list[FleetEdge],
        edges: dict[str, str],
        restore: tuple[DnsZones, ZoneSet] | None = None,
    ) -> CycleResult:
        """Put every edge that took `commit` back on the last good bundle (an empty one
        when nothing was ever applied) and DNS back on the last good zones (`restore`),
        then reject the commit."""
        good, bundle = self.state.last_good, self.state.good_bundle()
        if applied:
            if good is None or bundle is None:
                empty = self.settings.workdir / "empty-tenants"
                empty.mkdir(parents=True, exist_ok=True)
                blank = compile_paths([empty], load_policy(self.settings.inventory))
                bundle = GoodBundle(blank.bundle or b"", blank.manifest or b"")
                version, good_commit = blank.version or "", None
            else:
                version, good_commit = good.version, good.commit
            pusher = self._pusher(bundle, version)
            results = self._push_all(applied, pusher, good_commit or "none")
            for name, what in results.items():
                edges[name] = f"rolled back: {what}"
            if any(what.startswith(("failed", "unreachable")) for what in results.values()):
                detail += "; rollback incomplete: " + ", ".join(
                    f"{name} {what}" for name, what in results.items()
                )
        if restore is not None:
            try:
                self._install_zones(*restore)
            except ZonesError as exc:
                detail += f"; DNS not restored: {exc}"
        return self._reject(commit, reason, detail, edges)

    # -- the loop ----------------------------------------------------------------------
    def run_forever(
        self,
        interval: float,
        trigger: threading.Event,
        stop: Callable[[], bool],
        on_result: Callable[[CycleResult], object] | None = None,
    ) -> None:
        """A cycle every `interval` seconds, or at once when `trigger` is set (webhook),
        until `stop()` (checked between cycles: a cycle under way finishes)."""
        while not stop():
            try:
                result = self.cycle()
                if on_result is not None:
                    on_result(result)
            except SyncError as exc:
                log_event("sync_error", error=str(exc))
            trigger.wait(interval)
            trigger.clear()
