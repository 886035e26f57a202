"""The gdnsd exporter the geodns role installs, run for real next to a real gdnsd.

The role's configure step installs the program and writes its unit into a private directory;
the test starts the unit's own ExecStart command (as the gdnsd user, as the unit does) on
127.0.0.1 and scrapes it with httpx. The text must pass `promtool check metrics` and a strict
parse; counters rise with real DNS queries; a drain shows as a forced-down resource; a hung or
stopped gdnsd reads gdnsd_up 0 within the exporter's timeout.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest
import yaml

from cdnctl.edge.runner import free_port
from tests.conftest import tenant_doc
from tests.fleet.conftest import Gdnsd, query, wait_for
from tests.fleet.test_dns_role import converge, dns_host_vars, make_inventory

pytestmark = pytest.mark.integration

EDGE = "127.0.0.11"  # in the inventory, never started: its health check says DOWN
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>-?[0-9.e+-]+|NaN|[+-]Inf)$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """(name, labels) -> value of Prometheus text; any line that is not a comment, a
    HELP/TYPE line or a well-formed sample fails the test."""
    samples: dict[tuple[str, frozenset], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        assert match["name"] in typed, f"{match['name']} has no TYPE line"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        key = (match["name"], labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(match["value"])
    return samples


@dataclass
class Exporter:
    url: str
    gdnsd: Gdnsd
    unit: str

    def scrape(self) -> tuple[str, dict[tuple[str, frozenset], float]]:
        response = httpx.get(self.url, timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return response.text, parse(response.text)

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape()[1].get((name, frozenset(labels.items())))


def exec_start(unit: str) -> list[str]:
    """The unit's ExecStart command line (backslash continuations joined)."""
    joined = unit.replace("\\\n", " ")
    [line] = [line for line in joined.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    base = tmp_path_factory.mktemp("exporter")
    (base / "tenants").mkdir()
    (base / "tenants" / "shop.yaml").write_text(yaml.safe_dump(tenant_doc("shop")))
    server = Gdnsd("exporter")
    port = free_port()
    settings = {
        "domain": "cdn.test",
        "regions": {"eu": {"nets": ["192.0.2.0/24"]}},
        "health": {"interval": 2, "timeout": 1, "up_thresh": 1, "ok_thresh": 1, "down_thresh": 1},
    }
    host = dns_host_vars(
        base,
        server,
        geodns_exporter_address="127.0.0.1",
        geodns_exporter_port=port,
        geodns_exporter_timeout=2,
    )
    inventory = make_inventory(base, server, settings, {"eu-dns-1": host})
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["all"]["children"]["edge"]["hosts"]["eu-edge-1"]["cdn_public_address"] = EDGE
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    process = None
    try:
        result = converge(base, inventory)
        assert result.returncode == 0, result.stdout + result.stderr
        program = Path(host["geodns_exporter_program"])
        assert (
            program.read_bytes()
            == (Path(__file__).parents[2] / "roles/geodns/files/gdnsd_exporter.py").read_bytes()
        )
        assert os.access(program, os.X_OK)
        unit_path = server.root / "cdnctl-gdnsd-exporter.service"
        unit = unit_path.read_text()
        server.start()
        command = exec_start(unit)
        if os.geteuid() == 0:  # as the unit: User=gdnsd (the control socket is gdnsd's)
            os.chmod(program.parent, 0o755)
            command = ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups", *command]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        found = Exporter(f"http://127.0.0.1:{port}/metrics", server, unit)

        def answers() -> bool:
            try:
                return httpx.get(found.url, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, timeout=10)
        yield found
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        server.stop()


def test_the_unit_is_hardened_and_verifies(exporter: Exporter, tmp_path: Path) -> None:
    for line in (
        "User=gdnsd",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert f"\n{line}\n" in exporter.unit
    if shutil.which("systemd-analyze"):
        unit = tmp_path / "cdnctl-gdnsd-exporter.service"
        unit.write_text(exporter.unit)
        checked = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


def test_the_metrics_are_valid_prometheus_text(exporter: Exporter) -> None:
    text, samples = exporter.scrape()
    linted = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert samples[("gdnsd_up", frozenset())] == 1
    assert samples[("gdnsd_uptime_seconds", frozenset())] >= 0
    for protocol in ("udp", "tcp"):
        assert ("gdnsd_requests_total", frozenset({("protocol", protocol)})) in samples
    rcodes = {dict(labels)["rcode"] for name, labels in samples if name == "gdnsd_responses_total"}
    assert {"noerror", "nxdomain", "refused"} <= rcodes
    # The edge of the inventory is health-checked: its monitored state is a series.
    resource = frozenset({("resource", f"{EDGE}/edge_health")})
    assert ("gdnsd_service_monitored_up", resource) in samples
    assert samples[("gdnsd_service_forced", resource)] == 0


def test_counters_rise_with_dns_queries(exporter: Exporter) -> None:
    port = exporter.gdnsd.port
    before = exporter.scrape()[1]
    for _ in range(5):
        assert query(port, "shop.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    query(port, "nobody.cdn.test")  # NXDOMAIN
    tcp = dns.query.tcp(dns.message.make_query("shop.cdn.test", "CNAME"), "127.0.0.1", port=port)
    assert tcp.answer
    after = exporter.scrape()[1]

    def rise(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after[key] - before[key]

    assert rise("gdnsd_requests_total", protocol="udp") >= 6
    assert rise("gdnsd_requests_total", protocol="tcp") >= 1
    assert rise("gdnsd_responses_total", rcode="noerror") >= 6
    assert rise("gdnsd_responses_total", rcode="nxdomain") >= 1
    assert rise("gdnsd_edns_requests_total") >= 6  # dnspython's UDP queries carry EDNS


def test_a_drained_edge_is_a_forced_down_resource(exporter: Exporter) -> None:
    admin_state = exporter.gdnsd.state_dir / "admin_state"
    admin_state.write_text(f"{EDGE}/edge_health => DOWN\n")
    labels = {"resource": f"{EDGE}/edge_health"}
    try:
        wait_for(lambda: exporter.value("gdnsd_service_forced", **labels) == 1, timeout=10)
        assert exporter.value("gdnsd_service_up", **labels) == 0
    finally:
        admin_state.write_text("")
    wait_for(lambda: exporter.value("gdnsd_service_forced", **labels) == 0, timeout=10)


def test_a_hung_gdnsd_reads_down_within_the_timeout(exporter: Exporter) -> None:
    assert exporter.gdnsd.proc is not None
    pid = exporter.gdnsd.proc.pid
    # setpriv execs gdnsd: the Popen's pid is gdnsd's.
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert exporter.value("gdnsd_up") == 0
        took = time.monotonic() - started
        print(f"\nscrape of a hung gdnsd: gdnsd_up 0 after {took:.2f} s (timeout 2 s)")
        assert took < 10
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: exporter.value("gdnsd_up") == 1, timeout=10)


def test_a_stopped_gdnsd_reads_down(exporter: Exporter) -> None:
    """Last: the module's gdnsd stays stopped (the exporter keeps answering)."""
    assert exporter.gdnsd.proc is not None
    exporter.gdnsd.proc.terminate()
    exporter.gdnsd.proc.wait(timeout=10)
    text, samples = exporter.scrape()
    assert samples[("gdnsd_up", frozenset())] == 0
    assert not [name for name, _ in samples if name.startswith("gdnsd_requests")], text
