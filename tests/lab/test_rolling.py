"""Rolling edge upgrades on the lab (ansible/rolling.yml through cdnctl.fleet.rolling).

Under a bounded load that resolves every request through its region's GeoDNS host and opens
a new HTTPS connection each time (cdnctl.lab.load), every edge of both regions is drained,
upgraded with an nginx restart, verified and put back, one at a time: not one request may
fail. The refusals (a degraded fleet, a batch that would empty a region) and a roll that
stops on a failed verify (the edge stays drained, the next one is untouched) are checked too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from cdnctl.fleet import drain, rolling
from cdnctl.fleet.dns_hosts import DnsHosts
from cdnctl.lab.fleet import inventory_dir, lab_environment
from cdnctl.lab.load import LoadReport, run_load
from tests.lab.conftest import FleetLab, podman

LOAD_SECONDS = 1200.0  # the load's own bound: far above a roll of the lab's four edges
LOAD_REQUESTS = 200_000


def main_pid(host: str) -> str:
    return podman("exec", host, "systemctl", "show", "-p", "MainPID", "--value", "cdnctl-nginx")


def token() -> str:
    return lab_environment()["CDNCTL_ADMIN_TOKEN"]


def edges(fleet_lab: FleetLab) -> dict[str, str]:
    return {host: address for r in fleet_lab.up.view.regions for host, address in r.edges.items()}


@pytest.fixture
def drained_edge() -> Iterator[str]:
    """eu-edge-2 drained in GeoDNS for the test, put back afterwards; by the DNS hosts'
    drain agents (the geodns role runs them on the lab too)."""
    hosts = DnsHosts(inventory_dir(), token=token())
    result = drain.set_drain(hosts, "eu-edge-2", drain=True)
    assert {host.via for host in result.hosts} == {"agent"}, result.hosts
    try:
        yield "eu-edge-2"
    finally:
        drain.set_drain(hosts, "eu-edge-2", drain=False)
        rolling.wait_in_dns(inventory_dir(), "eu-edge-2", 60, time.sleep, time.monotonic)


def test_a_healthy_lab_may_roll(fleet_lab: FleetLab) -> None:
    plan = rolling.preflight(inventory_dir(), "all", 1, token())
    assert plan.ok, plan.problems
    assert plan.regions == ["eu", "us"]
    assert plan.batches == {
        "eu": [["eu-edge-1"], ["eu-edge-2"]],
        "us": [["us-edge-1"], ["us-edge-2"]],
    }
    assert plan.version and plan.version.startswith("sha256:")


def test_a_batch_that_would_empty_a_region_is_refused(fleet_lab: FleetLab) -> None:
    plan = rolling.preflight(inventory_dir(), "eu", 2, token())
    assert not plan.ok
    assert any("--batch 2 would drain all 2 of its edges" in p for p in plan.problems), (
        plan.problems
    )


def test_a_degraded_fleet_is_refused(fleet_lab: FleetLab, drained_edge: str) -> None:
    plan = rolling.preflight(inventory_dir(), "us", 1, token())  # even for the other region
    assert not plan.ok
    assert any(f"edge {drained_edge} is drained" in p for p in plan.problems), plan.problems


def test_every_edge_rolled_under_load_fails_no_request(fleet_lab: FleetLab) -> None:
    before = {host: main_pid(host) for host in edges(fleet_lab)}
    stop = threading.Event()
    load: list[LoadReport] = []
    root = fleet_lab.up.root_ca.read_text(encoding="utf-8")
    thread = threading.Thread(
        target=lambda: load.append(
            run_load(
                fleet_lab.up.view,
                fleet_lab.up.tenants,
                root,
                stop,
                max_seconds=LOAD_SECONDS,
                max_requests=LOAD_REQUESTS,
            )
        ),
        daemon=True,
    )
    thread.start()
    try:
        results = rolling.run_roll(
            inventory_dir(), ["eu", "us"], batch=1, restart=True, env=lab_environment(), echo=print
        )
    finally:
        stop.set()
        thread.join(timeout=60)
    report = load[0]
    print("\nrolling under load: " + json.dumps(report.as_json()))
    print("roll: " + ", ".join(f"{r.region} {r.seconds:.0f} s" for r in results))
    assert [r.ok for r in results] == [True, True], [r.stopped for r in results]
    assert report.failures == [], report.failures[:10]
    assert report.requests >= 200, report.as_json()
    # Every edge served before or after its turn, and every nginx was restarted.
    assert set(report.served_by) == set(edges(fleet_lab).values()), report.served_by
    after = {host: main_pid(host) for host in edges(fleet_lab)}
    assert all(after[h] != before[h] for h in before), (before, after)
    assert rolling.preflight(inventory_dir(), "all", 1, token()).ok


def test_a_failed_verify_stops_the_roll_with_the_edge_drained(fleet_lab: FleetLab) -> None:
    """A verify that cannot pass (the fleet's version overridden with one no edge runs):
    the first eu edge stays drained, the second is not touched, and the message says how
    to resume; the test then resumes as it says (undrain)."""
    second = main_pid("eu-edge-2")
    hosts = DnsHosts(inventory_dir())
    try:
        results = rolling.run_roll(
            inventory_dir(),
            ["eu"],
            batch=1,
            restart=False,
            env=lab_environment(),
            echo=print,
            extra_vars=[f"__version=sha256:{'0' * 64}"],
        )
        assert [r.ok for r in results] == [False]
        stopped = results[0].stopped or ""
        assert "stopped at eu-edge-1" in stopped and "Verify the edge" in stopped, stopped
        assert "cdnctl undrain eu-edge-1" in stopped, stopped
        assert drain.current_state(hosts).drains.edges == {"eu-edge-1"}
        assert main_pid("eu-edge-2") == second
    finally:
        drain.set_drain(hosts, "eu-edge-1", drain=False)
    states = rolling.wait_in_dns(inventory_dir(), "eu-edge-1", 60, time.sleep, time.monotonic)
    assert set(states.values()) == {"UP"}, states
