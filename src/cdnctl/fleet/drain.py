"""Drain and undrain edges or whole regions with gdnsd's `admin_state` on every DNS host.

A drained edge is forced DOWN (`<address>/edge_health => DOWN`): its region's other edges
keep answering. A drained region is forced DOWN at the datacenter level (`geoip/edge/<region>
=> DOWN`): its clients get the next region of their failover list. gdnsd watches the file
and applies it in about two seconds.

cdnctl owns the lines it writes (tagged `# cdnctl drain ...`); any other line an SRE put in
the file is kept, in front. The drains in force are the union of what the DNS hosts' files
say, and every host gets the same file back, so hosts that diverged converge.

Safety: a drain that leaves a region that is not itself drained without an edge, or the
whole fleet without one, is refused unless forced (drain the region instead: its clients
then fail over on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cdnctl.fleet.dns import RESOURCE, SERVICE_TYPE, DnsError, DnsHosts, Fleet, HostResult

MARK = "# cdnctl drain"


class DrainRefused(DnsError):
    """The drain would leave a region or the fleet with no edge."""


@dataclass(frozen=True)
class Drains:
    edges: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()

    def serving(self, fleet: Fleet) -> dict[str, list[str]]:
        """Region -> its edges still in DNS (drained regions are absent)."""
        return {
            region: [e.name for e in fleet.edges_of(region) if e.name not in self.edges]
            for region in sorted({e.region for e in fleet.edges})
            if region not in self.regions
        }


@dataclass(frozen=True)
class AdminState:
    drains: Drains
    other_lines: tuple[str, ...] = ()  # lines cdnctl did not write: kept as they are


@dataclass
class DrainResult:
    before: Drains
    after: Drains
    hosts: list[HostResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.hosts)


def parse_admin_state(text: str) -> AdminState:
    edges, regions, other = set(), set(), []
    for line in text.splitlines():
        if MARK in line:
            kind, _, name = line.split(MARK, 1)[1].strip().partition(" ")
            (edges if kind == "edge" else regions).add(name.strip())
        elif line.strip():
            other.append(line)
    return AdminState(Drains(frozenset(edges), frozenset(regions)), tuple(other))


def render_admin_state(state: AdminState, fleet: Fleet) -> str:
    lines = list(state.other_lines)
    for region in sorted(state.drains.regions):
        lines.append(f"geoip/{RESOURCE}/{region} => DOWN {MARK} region {region}")
    for name in sorted(state.drains.edges):
        edge = fleet.edge(name)
        if edge is not None:  # an edge gone from the inventory has nothing left to drain
            lines.append(f"{edge.address}/{SERVICE_TYPE} => DOWN {MARK} edge {name}")
    return "".join(f"{line}\n" for line in lines)


def problems(fleet: Fleet, drains: Drains) -> list[str]:
    """Why `drains` would leave part of the fleet without an edge."""
    serving = drains.serving(fleet)
    found = [
        f"region {region} would have no edge in DNS: drain the region itself (cdnctl drain "
        f"{region}) so that its clients fail over on purpose"
        for region, edges in serving.items()
        if not edges
    ]
    if not any(serving.values()):
        found.append("no edge of the fleet would be left in DNS")
    return found


def resolve_target(fleet: Fleet, target: str) -> tuple[str, str]:
    """("edge" | "region", name) for an edge name or a region name of the inventory."""
    if fleet.edge(target) is not None:
        return "edge", target
    regions = sorted({e.region for e in fleet.edges})
    if target in regions:
        return "region", target
    raise DnsError(
        f"{target!r} is neither an edge nor a region of the inventory: edges "
        f"{[e.name for e in fleet.edges]}, regions {regions}"
    )


def change(drains: Drains, kind: str, name: str, drain: bool) -> Drains:
    edges, regions = set(drains.edges), set(drains.regions)
    chosen = edges if kind == "edge" else regions
    if drain:
        chosen.add(name)
    else:
        chosen.discard(name)
    return Drains(frozenset(edges), frozenset(regions))


def current_state(hosts: DnsHosts) -> AdminState:
    """The union of the drains on every DNS host (a host that cannot be read fails)."""
    results = hosts.read_admin_state()
    failed = [r for r in results if not r.ok]
    if failed or not results:
        details = "; ".join(f"{r.host}: {r.error}" for r in failed) or "no host in group dns"
        raise DnsError(f"cannot read admin_state on every DNS host: {details}")
    states = [parse_admin_state(r.stdout) for r in results]
    return AdminState(
        Drains(
            frozenset().union(*(s.drains.edges for s in states)),
            frozenset().union(*(s.drains.regions for s in states)),
        ),
        states[0].other_lines,
    )


def set_drain(
    hosts: DnsHosts, fleet: Fleet, target: str, *, drain: bool, force: bool = False
) -> DrainResult:
    """Drain (or undrain) an edge or a region on every DNS host."""
    kind, name = resolve_target(fleet, target)
    state = current_state(hosts)
    after = change(state.drains, kind, name, drain)
    if drain and not force:
        new = [p for p in problems(fleet, after) if p not in problems(fleet, state.drains)]
        if new:
            raise DrainRefused(
                f"refusing to drain {kind} {name}: " + "; ".join(new) + " (--force overrides)"
            )
    text = render_admin_state(AdminState(after, state.other_lines), fleet)
    return DrainResult(state.drains, after, hosts.write_admin_state(text))
