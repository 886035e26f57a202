#!/usr/bin/python3
"""gdnsd's statistics and monitored states as Prometheus text, one scrape = one look.

Installed by the geodns role on every DNS host (python3 standard library only: DNS hosts do
not carry cdnctl). Each GET /metrics runs `gdnsdctl stats` and `gdnsdctl states` (JSON from
the running daemon's control socket) under a timeout, so a hung gdnsd makes a scrape answer
`gdnsd_up 0` instead of hanging it. Metrics:

- gdnsd_up: 1 when gdnsd answered both commands;
- gdnsd_uptime_seconds; gdnsd_requests_total{protocol} (udp, tcp);
  gdnsd_responses_total{rcode} (noerror, nxdomain, refused, ...); gdnsd_dropped_total and
  the other counters of `gdnsdctl stats` (gdnsd_udp_*_total, gdnsd_tcp_*_total, edns);
- per monitored resource (an edge's `<address>/<service_type>`, a region's
  `geoip/<resource>/<region>`) of `gdnsdctl states`: gdnsd_service_up (the state answers
  use, drains included), gdnsd_service_monitored_up (what the health check sees) and
  gdnsd_service_forced (1 while admin_state forces it, e.g. `cdnctl drain`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# gdnsdctl stats: "stats" block keys that are response codes, the rest by name.
RCODES = ("noerror", "refused", "nxdomain", "notimp", "badvers", "formerr")
COUNTERS = {
    "dropped": ("gdnsd_dropped_total", "Requests dropped (not answered)."),
    "v6": ("gdnsd_ipv6_requests_total", "Requests received over IPv6."),
    "edns": ("gdnsd_edns_requests_total", "Requests with an EDNS OPT record."),
    "edns_clientsub": (
        "gdnsd_edns_client_subnet_requests_total",
        "Requests with an EDNS Client Subnet option.",
    ),
    "edns_do": ("gdnsd_edns_do_requests_total", "Requests with the EDNS DO bit."),
}
COOKIE_PREFIX = "edns_cookie_"
CLOSED = "connections closed, by whom (server_kill: to make room for a new client)."
# gdnsdctl stats: "udp" and "tcp" block keys (besides reqs) -> name under gdnsd_<protocol>_,
# labels, help.
PROTOCOL_COUNTERS = {
    "recvfail": ("receive_failures_total", {}, "receive failures."),
    "sendfail": ("send_failures_total", {}, "send failures."),
    "tc": ("truncated_responses_total", {}, "responses truncated (TC bit)."),
    "edns_big": ("edns_big_responses_total", {}, "EDNS responses over 512 bytes."),
    "edns_tc": ("edns_truncated_responses_total", {}, "EDNS responses truncated."),
    "conns": ("connections_total", {}, "connections accepted."),
    "close_c": ("connections_closed_total", {"by": "client"}, CLOSED),
    "close_s_ok": ("connections_closed_total", {"by": "server"}, CLOSED),
    "close_s_err": ("connections_closed_total", {"by": "server_error"}, CLOSED),
    "close_s_kill": ("connections_closed_total", {"by": "server_kill"}, CLOSED),
    "proxy": ("proxy_connections_total", {}, "connections on PROXY protocol listeners."),
    "proxy_fail": ("proxy_failures_total", {}, "PROXY connections with a bad header."),
    "dso_estab": ("dso_sessions_total", {}, "DNS Stateful Operations sessions."),
    "dso_protoerr": ("dso_protocol_errors_total", {}, "DNS Stateful Operations errors."),
    "dso_typeni": ("dso_unimplemented_total", {}, "DSO messages of an unimplemented type."),
    "acceptfail": ("accept_failures_total", {}, "accept() failures."),
}


class Family:
    """One metric family: HELP, TYPE and its samples in the order they were added."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help_text = name, kind, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def text(self) -> str:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            rendered = ",".join(f'{key}="{escape(val)}"' for key, val in sorted(labels.items()))
            sample = f"{self.name}{{{rendered}}}" if rendered else self.name
            lines.append(f"{sample} {number(value)}")
        return "\n".join(lines) + "\n"


def number(value: float) -> str:
    """Counters as exact integers (a float's %g would round 1234567 to 1.23457e+06)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Families(dict):
    def get_or_add(self, name: str, kind: str, help_text: str) -> Family:
        if name not in self:
            self[name] = Family(name, kind, help_text)
        return self[name]

    def text(self) -> str:
        return "".join(family.text() for family in self.values())


def gdnsdctl(command: list[str], action: str, timeout: float) -> dict:
    """The JSON a gdnsdctl action prints; OSError/TimeoutExpired/ValueError when it cannot."""
    proc = subprocess.run(
        [*command, action], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip() or f"gdnsdctl {action} exited {proc.returncode}")
    return json.loads(proc.stdout)


def stats_families(families: Families, stats: dict) -> None:
    families.get_or_add(
        "gdnsd_uptime_seconds", "gauge", "Seconds since gdnsd (or the daemon it replaced) started."
    ).add(float(stats.get("uptime", 0)))
    requests = families.get_or_add(
        "gdnsd_requests_total", "counter", "DNS requests received, by transport protocol."
    )
    for protocol in ("udp", "tcp"):
        requests.add(float(stats.get(protocol, {}).get("reqs", 0)), protocol=protocol)
    responses = families.get_or_add(
        "gdnsd_responses_total", "counter", "DNS responses sent, by response code."
    )
    general = stats.get("stats", {})
    cookies = None
    for key, value in general.items():
        if key in RCODES:
            responses.add(float(value), rcode=key)
        elif key.startswith(COOKIE_PREFIX):
            cookies = cookies or families.get_or_add(
                "gdnsd_edns_cookies_total", "counter", "EDNS cookies received, by outcome."
            )
            cookies.add(float(value), result=key.removeprefix(COOKIE_PREFIX))
        else:
            name, help_text = COUNTERS.get(key, (f"gdnsd_{key}_total", f"gdnsd stats {key}."))
            families.get_or_add(name, "counter", help_text).add(float(value))
    for protocol in ("udp", "tcp"):
        for key, value in stats.get(protocol, {}).items():
            if key == "reqs":
                continue
            suffix, labels, help_text = PROTOCOL_COUNTERS.get(
                key, (f"{key}_total", {}, f"gdnsdctl stats {protocol}.{key}.")
            )
            families.get_or_add(
                f"gdnsd_{protocol}_{suffix}", "counter", f"{protocol.upper()} {help_text}"
            ).add(float(value), **labels)


def up_value(state: str) -> float | None:
    """1 for UP or DANGER (up, failing checks), 0 for DOWN, None for NA (not monitored)."""
    base = state.rstrip("!").upper()
    if base in ("UP", "DANGER"):
        return 1.0
    if base == "DOWN":
        return 0.0
    return None


def states_families(families: Families, states: dict) -> None:
    served = families.get_or_add(
        "gdnsd_service_up",
        "gauge",
        "1 while gdnsd serves the resource as up (admin_state forcings included).",
    )
    monitored = families.get_or_add(
        "gdnsd_service_monitored_up", "gauge", "1 while gdnsd's health check sees it up."
    )
    forced = families.get_or_add(
        "gdnsd_service_forced", "gauge", "1 while admin_state forces the state (a drain)."
    )
    for resource, state in sorted(states.items()):
        effective = str(state.get("state", "NA"))
        for family, text in ((served, effective), (monitored, str(state.get("real_state", "NA")))):
            value = up_value(text)
            if value is not None:
                family.add(value, resource=resource)
        forced.add(1.0 if effective.endswith("!") else 0.0, resource=resource)


def scrape(command: list[str], timeout: float) -> str:
    started = time.monotonic()
    families = Families()
    up = families.get_or_add("gdnsd_up", "gauge", "1 when gdnsd answered its control socket.")
    try:
        stats = gdnsdctl(command, "stats", timeout)
        states = gdnsdctl(command, "states", timeout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"gdnsd_exporter: gdnsd did not answer: {exc}", file=sys.stderr)
        up.add(0.0)
    else:
        up.add(1.0)
        stats_families(families, stats)
        states_families(families, states)
    families.get_or_add(
        "gdnsd_exporter_scrape_duration_seconds", "gauge", "Seconds this scrape took."
    ).add(round(time.monotonic() - started, 6))
    return families.text()


def handler(command: list[str], timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "gdnsd_exporter"

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/metrics":
                self.reply(200, scrape(command, timeout), CONTENT_TYPE)
            elif self.path == "/":
                self.reply(200, "gdnsd exporter: GET /metrics\n", "text/plain; charset=utf-8")
            else:
                self.reply(404, "not found: GET /metrics\n", "text/plain; charset=utf-8")

        def reply(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per scrape is noise in the journal

    return Handler


class IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDRESS:PORT to serve /metrics on.")
    parser.add_argument("--config-dir", default="/etc/gdnsd", help="gdnsd's config directory.")
    parser.add_argument("--gdnsdctl", default="/usr/bin/gdnsdctl")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="Seconds gdnsdctl gets per command."
    )
    args = parser.parse_args(argv)
    address, _, port = args.listen.rpartition(":")
    if not address or not port.isdigit():
        parser.error(f"--listen {args.listen!r}: write ADDRESS:PORT, e.g. 10.0.0.5:9153")
    # -o: one try (no retries on a busy socket), within the scrape's own timeout.
    command = [args.gdnsdctl, "-c", args.config_dir, "-o"]
    host = address.strip("[]")
    server_class = IPv6Server if ":" in host else ThreadingHTTPServer
    server = server_class((host, int(port)), handler(command, args.timeout))
    print(f"gdnsd_exporter: serving http://{args.listen}/metrics", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
