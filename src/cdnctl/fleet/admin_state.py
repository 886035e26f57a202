"""gdnsd's admin_state file as cdnctl edits it: the drains it holds, the safety rules, and the
edit that runs ON each DNS host.

Python standard library only, and nothing imported from cdnctl. The edit reaches a DNS host
one of two ways, with the same request and the same report:
- the drain agent: the geodns role installs this file and runs `admin_state.py serve` (unit
  cdnctl-dns-admin, as the gdnsd user) on the host's private address; `POST /admin-state`
  with the admin token carries the request and the inventory's edges. One HTTP round trip,
  about 10 ms plus gdnsd's own reaction (dns_agents.py is the controller's side);
- Ansible: `cdnctl drain` sends this module's own source to every DNS host (`raw`,
  `python3 -c`) with the request: about 0.9 s, for hosts without a reachable agent.
Either way the host reads, checks, rewrites the file and waits until gdnsd serves the
change, all hosts in parallel. The controller imports the same functions (drain.py), so the
rules have one implementation.

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

import argparse
import contextlib
import fcntl
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    # Read-only is enough for flock: the agent (gdnsd's user) and Ansible (root) share the
    # lock file whoever created it. Two SREs draining at once: one edit after the other.
    lock = os.open(f"{path}.cdnctl.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = ""
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as current:
            text = current.read()
        result = edit(text, request)
        if write and result.text != text:
            _replace(path, result.text)
    finally:
        os.close(lock)
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


def _replace(path: str, text: str) -> None:
    """Write `path` by atomic rename from a file of its own (never a leftover of another
    user's edit)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # gdnsd (its own user) reads it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


@dataclass(frozen=True)
class Host:
    """Where this DNS host's gdnsd lives."""

    path: str  # its admin_state file
    config_dir: str
    immediate: bool  # gdnsd runs without its admin_state timers (geodns_immediate_states)

    def handle(self, request: Mapping, edges: Edges) -> dict:
        """The report of one request against `edges` (the inventory's), or {"error": ...}
        when the request is invalid (an unknown target: the same on every host)."""
        try:
            full = with_topology(request, edges)
        except ValueError as exc:
            return {"error": str(exc)}
        except (KeyError, TypeError) as exc:
            return {"error": f"invalid request: {exc!r}"}
        swap = 0.0 if self.immediate else SWAP_SECONDS
        report = apply(self.path, ["gdnsdctl", "-c", self.config_dir, "-o"], full, swap)
        return report | {"key": full.get("key"), "regions": full["regions"]}


MAX_REQUEST_BYTES = 1 << 20  # a request carries every edge: about 60 bytes each
AGENT_PATH = "/admin-state"


def agent_handler(host: Host, token: str) -> type[BaseHTTPRequestHandler]:
    """The drain agent: `POST /admin-state` ({"request": ..., "edges": {name: [region,
    address]}}, `Authorization: Bearer <token>`) answers the host's report (400 with
    {"error"} for an invalid request); `GET /health` says whether gdnsd answers."""
    expected = f"Bearer {token}".encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "cdnctl-dns-admin"
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds a client may stall (a request, or between two): then dropped

        def do_GET(self) -> None:
            if self.path != "/health":
                return self.reply(404, {"error": f"not found: GET {self.path[:100]}"})
            gdnsd = resource_states(["gdnsdctl", "-c", host.config_dir, "-o"]) is not None
            return self.reply(200, {"ok": True, "gdnsd": gdnsd})

        def do_POST(self) -> None:
            if self.path != AGENT_PATH:
                return self.reply(404, {"error": f"not found: POST {self.path[:100]}"})
            given = self.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return self.reply(401, {"error": "missing or wrong admin token (Bearer)"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.reply(411, {"error": "Content-Length required"})
            if not 0 < length <= MAX_REQUEST_BYTES:
                return self.reply(413, {"error": f"a request is 1 to {MAX_REQUEST_BYTES} bytes"})
            try:
                body = json.loads(self.rfile.read(length))
                request = body["request"]
                edges = {str(n): (str(r), str(a)) for n, (r, a) in body["edges"].items()}
                if not isinstance(request, dict):
                    raise TypeError("request is not an object")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return self.reply(400, {"error": f"invalid request body: {exc}"})
            report = host.handle(request, edges)
            if "error" in report:
                return self.reply(400, report)
            if request.get("write", True):
                self.log_message(
                    "edit %s: drained %s, changed %s, in force %s after %.3f s",
                    json.dumps(
                        {
                            k: request[k]
                            for k in ("target", "drain", "add", "remove")
                            if k in request
                        }
                    ),
                    json.dumps(report["after"]),
                    report["changed"],
                    report["in_force"],
                    report["waited"],
                )
            return self.reply(200, report)

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body, sort_keys=True).encode()
            self.send_response(status)
            if status >= 400:  # the body may be unread: no next request on this connection
                self.close_connection = True
                self.send_header("Connection", "close")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if code != 200:  # the edits log themselves; refusals and errors are logged here
                super().log_request(code, size)

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(argv: Sequence[str]) -> int:
    """`admin_state.py serve --listen ADDRESS:PORT --token-file F --state-file F
    --config-dir D [--timers]`: the drain agent, until stopped."""
    parser = argparse.ArgumentParser(prog="admin_state.py serve", description=serve.__doc__)
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT (the private address).")
    parser.add_argument("--token-file", required=True, help="The admin token, one line.")
    parser.add_argument("--state-file", required=True, help="gdnsd's admin_state file.")
    parser.add_argument("--config-dir", required=True, help="gdnsd's config directory.")
    parser.add_argument(
        "--timers",
        action="store_true",
        help="gdnsd runs with its own admin_state timers (geodns_immediate_states false).",
    )
    args = parser.parse_args(argv)
    address, _, port = args.listen.rpartition(":")
    if not address or not port.isdigit():
        parser.error(f"--listen {args.listen!r}: write ADDRESS:PORT, e.g. 10.0.0.5:9154")
    with open(args.token_file, encoding="utf-8") as token_file:
        token = token_file.read().strip()
    if len(token) < 16:
        parser.error(f"{args.token_file}: the admin token is shorter than 16 characters")
    host = Host(args.state_file, args.config_dir, immediate=not args.timers)
    bind = address.strip("[]")
    server_class = _IPv6Server if ":" in bind else ThreadingHTTPServer
    server = server_class((bind, int(port)), agent_handler(host, token))
    print(
        f"cdnctl-dns-admin: serving http://{args.listen}{AGENT_PATH}", file=sys.stderr, flush=True
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def main(argv: Sequence[str]) -> int:
    """argv: `serve ...` (the drain agent), or REQUEST_JSON TOPOLOGY ADMIN_STATE_PATH
    GDNSD_CONFIG_DIR IMMEDIATE (`True` when gdnsd runs with its timers off): one edit, its
    report (or {"error": ...}) printed as JSON."""
    if argv and argv[0] == "serve":
        return serve(argv[1:])
    request_json, topology, path, config_dir, immediate = argv
    try:
        request, edges = json.loads(request_json), parse_topology(topology)
    except ValueError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    report = Host(path, config_dir, immediate == "True").handle(request, edges)
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__" and sys.argv[0] != "-c":  # installed by the geodns role; not via -c
    raise SystemExit(main(sys.argv[1:]))
