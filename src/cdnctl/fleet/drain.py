"""Drain and undrain edges or whole regions with gdnsd's `admin_state` on every DNS host.

A drained edge is forced DOWN (`<address>/edge_health => DOWN`): its region's other edges
keep answering. A drained region is forced DOWN at the datacenter level (`geoip/edge/<region>
=> DOWN`): its clients get the next region of their failover list.

One round trip: every DNS host runs `admin_state.py` in parallel: its drain agent (one HTTP
call, dns_agents.py) or, where no agent answers, the same code sent with an Ansible command
(standard library only; the inventory's edges rendered into the command by Ansible). It reads its
file, checks the safety rules, rewrites it atomically and waits until its gdnsd answers from
the change (at once with the geodns role's `geodns_immediate_states`, else about two
seconds after the file changed: gdnsd's own timers). The
controller then looks at the union of what the hosts reported: a refusal anywhere (or by the
union's view) is undone where it was written; hosts whose drains diverged (one missed an
earlier drain) get the union written in a second round, so they converge.

Safety: a drain that leaves a region that is not itself drained without an edge, or the
whole fleet without one, is refused unless forced (drain the region instead: its clients
then fail over on purpose).
"""

from __future__ import annotations

import base64
import functools
import json
import shlex
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cdnctl.fleet import admin_state, dns_agents
from cdnctl.fleet.admin_state import AdminState, Drains, change
from cdnctl.fleet.dns_hosts import (
    ADMIN_STATE,
    CONFIG_DIR,
    RESOURCE,
    SERVICE_TYPE,
    DnsError,
    DnsHosts,
    HostResult,
)

__all__ = ["AdminState", "Drains", "change"]

WAIT_SECONDS = 10.0  # how long each host waits for its gdnsd to serve the change
AGENT_GRACE_SECONDS = 5.0  # an agent's answer may take its wait plus this
# Whether the host's gdnsd runs without its admin_state timers (the geodns role's default).
IMMEDIATE = "{{ geodns_immediate_states | default(true) | bool }}"
# The inventory's edges, `name=region=address,` each (admin_state.parse_topology), rendered
# by Ansible on the controller for each DNS host's command. Double quotes only: the command
# runs in a single-quoted `sh -c`.
TOPOLOGY = (
    '{% for e in groups["edge"] | default([]) %}{{ e }}={{ hostvars[e]["cdn_region"] }}='
    '{{ hostvars[e]["cdn_public_address"] }},{% endfor %}'
)
# The host runs admin_state.py's source from argv[1] (zlib + base64: commands stay short and
# need no quoting), then main() on the request in argv[2] and the rest.
BOOTSTRAP = "import base64,sys,zlib;exec(zlib.decompress(base64.b64decode(sys.argv[1])))"
CALL = (
    "raise SystemExit(main([zlib.decompress(base64.b64decode(sys.argv[2])).decode(), "
    "*sys.argv[3:]]))"
)


class DrainRefused(DnsError):
    """The drain would leave a region or the fleet with no edge."""


@dataclass(frozen=True)
class HostEdit:
    """What one DNS host did with an edit request."""

    host: str
    ok: bool
    error: str = ""
    before: Drains = field(default_factory=Drains)
    after: Drains = field(default_factory=Drains)
    refused: tuple[str, ...] = ()
    changed: bool = False
    in_force: bool | None = None  # None: gdnsd did not answer (it reads the file at start)
    waited: float = 0.0
    key: str = ""  # the drain key the host resolved the target to
    regions: dict[str, list[str]] = field(default_factory=dict)  # the safety rules' view
    invalid: bool = False  # the request itself was refused (error says why)
    via: str = "ansible"  # or "agent": what carried the edit (dns_agents.py)


@dataclass
class DrainResult:
    before: Drains
    after: Drains
    hosts: list[HostEdit] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.hosts)


@functools.cache
def _program() -> str:
    source = Path(admin_state.__file__).read_text(encoding="utf-8") + "\n" + CALL + "\n"
    return base64.b64encode(zlib.compress(source.encode(), 9)).decode()


def host_command(request: dict) -> str:
    """The shell command that applies `request` to a DNS host's admin_state (Ansible fills in
    the inventory's edges and the host's geodns_state_dir and geodns_config_dir). About 40
    bytes an edge: far below the 128 KiB one command may have up to a few thousand edges."""
    payload = base64.b64encode(zlib.compress(json.dumps(request).encode(), 9)).decode()
    return (
        f"python3 -c {shlex.quote(BOOTSTRAP)} {_program()} {payload} "
        f"'{TOPOLOGY}' {ADMIN_STATE} {CONFIG_DIR} {IMMEDIATE}"
    )


def edit_hosts(hosts: DnsHosts, request: dict) -> list[HostEdit]:
    """Apply `request` on `hosts` in parallel; a request a host finds invalid (an unknown
    target: the same on every host) is an error."""
    full = {"resource": RESOURCE, "service_type": SERVICE_TYPE, "wait": WAIT_SECONDS, **request}
    edits = [_host_edit(result) for result in _edit_results(hosts, full)]
    invalid = next((e.error for e in edits if e.invalid), None)
    if invalid:
        raise DnsError(invalid)
    return edits


def _edit_results(hosts: DnsHosts, request: dict) -> list[HostResult]:
    """Each host's outcome of `request`: through its drain agent where one answers, else
    through Ansible (dns_agents.py says when)."""
    found = hosts.agents()
    if found is None:
        return hosts.run(host_command(request))
    agents, edges = found
    timeout = float(request["wait"]) + AGENT_GRACE_SECONDS
    answers = dns_agents.post(agents, edges, hosts.token, request, timeout)
    results = [
        HostResult(a.host, a.ok, json.dumps(a.report) if a.ok else "", a.error, via="agent")
        for a in answers
        if not a.fallback
    ]
    rest = [a.host for a in answers if a.fallback]
    if rest:
        results += hosts.only(rest).run(host_command(request))
    return sorted(results, key=lambda result: result.host)


def _host_edit(result: HostResult) -> HostEdit:
    if not result.ok:
        return HostEdit(result.host, False, result.error, via=result.via)
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return HostEdit(
            result.host, False, f"unexpected output: {result.stdout.strip()[:300]}", via=result.via
        )
    if "error" in report:
        return HostEdit(result.host, False, report["error"], invalid=True, via=result.via)
    return HostEdit(
        result.host,
        True,
        via=result.via,
        key=report["key"] or "",
        regions=report["regions"],
        before=Drains.from_keys(_keys(report["before"])),
        after=Drains.from_keys(_keys(report["after"])),
        refused=tuple(report["refused"]),
        changed=report["changed"],
        in_force=report["in_force"],
        waited=report["waited"],
    )


def _keys(drains: dict[str, list[str]]) -> Iterable[str]:
    yield from (f"edge {name}" for name in drains["edges"])
    yield from (f"region {name}" for name in drains["regions"])


def _union(edits: Iterable[HostEdit], attribute: str) -> Drains:
    states = [getattr(edit, attribute) for edit in edits if edit.ok]
    return Drains(
        frozenset().union(*(s.edges for s in states)),
        frozenset().union(*(s.regions for s in states)),
    )


def current_state(hosts: DnsHosts) -> AdminState:
    """The union of the drains on every DNS host (a host that cannot be read fails)."""
    edits = edit_hosts(hosts, {"write": False})
    failed = [e for e in edits if not e.ok]
    if failed or not edits:
        details = "; ".join(f"{e.host}: {e.error}" for e in failed) or "no host in group dns"
        raise DnsError(f"cannot read admin_state on every DNS host: {details}")
    return AdminState(_union(edits, "before"))


def set_drain(hosts: DnsHosts, target: str, *, drain: bool, force: bool = False) -> DrainResult:
    """Drain (or undrain) an edge or a region on every DNS host, in one round trip."""
    check = drain and not force
    edits = edit_hosts(hosts, {"target": target, "drain": drain, "check": check})
    answered = [e for e in edits if e.ok]
    if not answered:
        details = "; ".join(f"{e.host}: {e.error}" for e in edits) or "no host in group dns"
        raise DnsError(f"admin_state was not edited on any DNS host: {details}")
    key, regions = answered[0].key, answered[0].regions
    kind, name = key.split(" ", 1)
    before = _union(edits, "before")
    after = change(before, kind, name, drain)
    refused = sorted({p for e in edits for p in e.refused})
    if check:
        refused += [p for p in admin_state.new_problems(regions, before, after) if p not in refused]
    if refused:
        written = [e.host for e in answered if e.changed]
        if written:  # hosts with another view accepted it: undo there
            edit_hosts(hosts.only(written), {"remove": [key], "wait": 0})
        raise DrainRefused(
            f"refusing to drain {kind} {name}: " + "; ".join(refused) + " (--force overrides)"
        )
    if any(e.after != after for e in answered):  # diverged hosts converge on the union
        stale = sorted(set(before.ordered_keys()) - set(after.ordered_keys()))
        converged = edit_hosts(
            hosts.only(e.host for e in answered),
            {"add": after.ordered_keys(), "remove": stale},
        )
        edits = converged + [e for e in edits if not e.ok]
    return DrainResult(before, after, sorted(edits, key=lambda e: e.host))
