"""gdnsd's admin_state file as cdnctl edits it: the drains it holds, the safety rules, and the
one-shot edit that runs ON each DNS host.

Python standard library only, and nothing imported from cdnctl: `cdnctl drain` sends this
module's own source to every DNS host (Ansible `raw`, `python3 -c`) with a request, and it
reads, checks, rewrites the file and waits until gdnsd serves the change, in one round trip
per host, all hosts in parallel. The controller imports the same functions (drain.py), so
the rules have one implementation.

File format: cdnctl owns the lines it writes, tagged `# cdnctl drain <kind> <name>`
(`<address>/<service_type> => DOWN # cdnctl drain edge eu-edge-1`,
`geoip/<resource>/<region> => DOWN # cdnctl drain region eu`); every other line is an SRE's
and is kept, in front. gdnsd watches the file and applies it about a second after it changes.

A request (JSON): `target` (an edge or region name) and `drain` (true/false), or `add`/`remove`
(keys `edge <name>` / `region <name>`); `check` (refuse an edit that leaves a region or the
fleet without an edge), `write` (false: only report), `wait` (seconds to wait until gdnsd
serves the change), `resource`/`service_type` (of gdnsd's config). The edges come from the
inventory as Ansible renders them into the command (`parse_topology`): the lines and regions
(`with_topology`) are derived on the host, so the controller needs no inventory listing of its
own. Drains of keys without a line (an edge gone from the inventory) are dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MARK = "# cdnctl drain"
POLL_SECONDS = 0.05
# gdnsd (src/plugins/mon.c) reads admin_state 1.02 s after the file changed and shows the
# forced states in `gdnsdctl states` at once, but answers from them only at its next state
# table swap, at most SWAP_SECONDS later: the edit is in force in DNS answers then. Started
# with GDNSD_TESTSUITE_NODELAY (the geodns role's geodns_immediate_states) it does both at
# once: nothing to wait for after `gdnsdctl states` shows the change.
SWAP_SECONDS = 1.0


@dataclass(frozen=True)
class Drains:
    edges: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> Drains:
        edges, regions = set(), set()
        for key in keys:
            kind, _, name = key.partition(" ")
            (edges if kind == "edge" else regions).add(name)
        return cls(frozenset(edges), frozenset(regions))

    def ordered_keys(self) -> list[str]:
        """`region <name>` then `edge <name>`, each sorted: the file's order."""
        return [f"region {r}" for r in sorted(self.regions)] + [
            f"edge {e}" for e in sorted(self.edges)
        ]

    def serving(self, regions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Region -> its edges still in DNS (drained regions are absent)."""
        return {
            region: [edge for edge in edges if edge not in self.edges]
            for region, edges in sorted(regions.items())
            if region not in self.regions
        }

    def as_json(self) -> dict[str, list[str]]:
        return {"edges": sorted(self.edges), "regions": sorted(self.regions)}


@dataclass(frozen=True)
class AdminState:
    drains: Drains
    other_lines: tuple[str, ...] = ()  # lines cdnctl did not write: kept as they are


def parse(text: str) -> AdminState:
    keys, other = [], []
    for line in text.splitlines():
        if MARK in line:
            kind, _, name = line.split(MARK, 1)[1].strip().partition(" ")
            keys.append(f"{'edge' if kind == 'edge' else 'region'} {name.strip()}")
        elif line.strip():
            other.append(line)
    return AdminState(Drains.from_keys(keys), tuple(other))


def render(state: AdminState, lines: Mapping[str, str]) -> str:
    out = list(state.other_lines)
    out.extend(f"{lines[key]} {MARK} {key}" for key in state.drains.ordered_keys() if key in lines)
    return "".join(f"{line}\n" for line in out)


def problems(regions: Mapping[str, Sequence[str]], drains: Drains) -> list[str]:
    """Why `drains` would leave part of the fleet without an edge."""
    serving = drains.serving(regions)
    found = [
        f"region {region} would have no edge in DNS: drain the region itself (cdnctl drain "
        f"{region}) so that its clients fail over on purpose"
        for region, edges in serving.items()
        if not edges
    ]
    if not any(serving.values()):
        found.append("no edge of the fleet would be left in DNS")
    return found


def new_problems(regions: Mapping[str, Sequence[str]], before: Drains, after: Drains) -> list[str]:
    """Problems `after` has that `before` did not (an edit never makes things worse)."""
    known = problems(regions, before)
    return [problem for problem in problems(regions, after) if problem not in known]


def change(drains: Drains, kind: str, name: str, drain: bool) -> Drains:
    edges, regions = set(drains.edges), set(drains.regions)
    chosen = edges if kind == "edge" else regions
    if drain:
        chosen.add(name)
    else:
        chosen.discard(name)
    return Drains(frozenset(edges), frozenset(regions))


@dataclass(frozen=True)
class Edit:
    text: str  # the new file text (the old one when refused)
    before: Drains
    after: Drains  # == before when refused
    refused: tuple[str, ...] = ()


def edit(text: str, request: Mapping) -> Edit:
    """What `request` makes of the file `text`."""
    state = parse(text)
    lines = request.get("lines", {})
    keys = set(state.drains.ordered_keys()) | set(request.get("add", []))
    keys -= set(request.get("remove", []))
    after = Drains.from_keys(key for key in keys if key in lines)
    if request.get("check"):
        refused = new_problems(request.get("regions", {}), state.drains, after)
        if refused:
            return Edit(text, state.drains, state.drains, tuple(refused))
    return Edit(render(AdminState(after, state.other_lines), lines), state.drains, after)


def resource_states(gdnsdctl: Sequence[str]) -> dict[str, str] | None:
    """Resource -> state (`DOWN!` when forced) of the running gdnsd; None when it does not
    answer."""
    try:
        proc = subprocess.run(
            [*gdnsdctl, "states"], capture_output=True, text=True, timeout=5, check=False
        )
        states = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return {name: str(value.get("state", "")) for name, value in (states or {}).items()}


def wait_in_force(
    gdnsdctl: Sequence[str], expected: Mapping[str, bool], timeout: float, swap: float
) -> tuple[bool | None, float]:
    """Wait until each resource is forced (True) or not (False) in gdnsd's states, then
    `swap` seconds until its answers use them: (done, seconds); done is None when gdnsd does
    not answer (it reads the file when it starts)."""
    started = time.monotonic()
    while True:
        states = resource_states(gdnsdctl)
        if states is None:
            return None, time.monotonic() - started
        if all(states.get(r, "").endswith("!") == forced for r, forced in expected.items()):
            time.sleep(swap)
            return True, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started
        time.sleep(POLL_SECONDS)


def apply(path: str, gdnsdctl: Sequence[str], request: Mapping, swap: float = SWAP_SECONDS) -> dict:
    """Edit the file at `path` under a lock, atomically, then wait until gdnsd serves it
    (`swap`: seconds from `gdnsdctl states` showing it to the answers using it)."""
    write = request.get("write", True)
    with open(f"{path}.cdnctl.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two SREs draining at once: one edit after the other
        text = ""
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as current:
            text = current.read()
        result = edit(text, request)
        if write and result.text != text:
            tmp = f"{path}.cdnctl"
            with open(tmp, "w", encoding="utf-8") as out:
                out.write(result.text)
            os.chmod(tmp, 0o644)  # gdnsd (its own user) reads it
            os.replace(tmp, path)
    report = {
        "before": result.before.as_json(),
        "after": result.after.as_json(),
        "refused": list(result.refused),
        "changed": result.text != text,
        "in_force": None,
        "waited": 0.0,
    }
    if write and not result.refused:
        lines = request.get("lines", {})
        before, after = set(result.before.ordered_keys()), set(result.after.ordered_keys())
        # What this edit changed, and what it asked for that was already there.
        touched = (before ^ after) | (set(request.get("add", [])) & after)
        expected = {lines[key].split(" => ", 1)[0]: key in after for key in touched}
        report["in_force"], report["waited"] = wait_in_force(
            gdnsdctl, expected, float(request.get("wait", 10)), swap if report["changed"] else 0.0
        )
    return report


Edges = Mapping[str, tuple[str, str]]  # edge name -> (region, address)


def parse_topology(text: str) -> dict[str, tuple[str, str]]:
    """The inventory's edges as Ansible renders them into the command, `name=region=address,`
    per edge."""
    edges = {}
    for item in filter(None, text.split(",")):
        name, region, address = item.split("=")
        edges[name] = (region, address)
    return edges


def regions_of(edges: Edges) -> dict[str, list[str]]:
    """Region -> its edge names (what the safety rules look at)."""
    regions: dict[str, list[str]] = {}
    for name, (region, _) in sorted(edges.items()):
        regions.setdefault(region, []).append(name)
    return regions


def drain_lines(edges: Edges, resource: str, service_type: str) -> dict[str, str]:
    """Drain key -> its admin_state line, for every edge and region."""
    lines = {f"edge {n}": f"{address}/{service_type} => DOWN" for n, (_, address) in edges.items()}
    lines |= {f"region {r}": f"geoip/{resource}/{r} => DOWN" for r in regions_of(edges)}
    return lines


def resolve(edges: Edges, target: str) -> str:
    """The drain key (`edge <name>` or `region <name>`) of an edge or region name."""
    if target in edges:
        return f"edge {target}"
    regions = regions_of(edges)
    if target in regions:
        return f"region {target}"
    raise ValueError(
        f"{target!r} is neither an edge nor a region of the inventory: edges "
        f"{sorted(edges)}, regions {sorted(regions)}"
    )


def with_topology(request: Mapping, edges: Edges) -> dict:
    """`request` with the lines and regions of `edges`, its `target` (if any) resolved into
    `add` (drain) or `remove` (undrain)."""
    full = {
        **request,
        "regions": regions_of(edges),
        "lines": drain_lines(edges, request["resource"], request["service_type"]),
    }
    if "target" in request:
        key = resolve(edges, request["target"])
        full["key"] = key
        full["add" if request["drain"] else "remove"] = [key]
    return full


def main(argv: Sequence[str]) -> int:
    """argv: REQUEST_JSON TOPOLOGY ADMIN_STATE_PATH GDNSD_CONFIG_DIR IMMEDIATE (`True` when
    gdnsd runs with its timers off); prints the report (or {"error": ...}) as JSON."""
    request_json, topology, path, config_dir, immediate = argv
    try:
        request = with_topology(json.loads(request_json), parse_topology(topology))
    except ValueError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    swap = 0.0 if immediate == "True" else SWAP_SECONDS
    report = apply(path, ["gdnsdctl", "-c", config_dir, "-o"], request, swap)
    report |= {"key": request.get("key"), "regions": request["regions"]}
    print(json.dumps(report, sort_keys=True))
    return 0
