"""`cdnctl lab up` / `status` / `down`: the multi-region lab of pulumi/Pulumi.local.yaml on
podman, configured by site.yml, with certificates from the lab's pebble, smoke-tested.

The smoke test's checks are the assertions: every sample tenant through every region's DNS
host (ECS subnet of the region) and over HTTPS (pebble's root) through the edge it names,
MISS then HIT; one origin fetch per object per region behind its shield; every Prometheus
target up. A lab that was already running is used as it is and left running; one this test
brought up it takes down again, and then nothing labelled cdnctl.lab is left (the shared
`fleet_lab` fixture of tests/lab/conftest.py checks that at the end of the session).
"""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.lab.fleet import lab_status, lab_up
from tests.lab.conftest import FleetLab


def test_every_tenant_through_every_region_over_https(fleet_lab: FleetLab) -> None:
    report = fleet_lab.up.smoke
    assert report.ok, [f"{c.region}: {c.what}: {c.detail}" for c in report.failed]
    regions = {r.name for r in fleet_lab.up.view.regions}
    assert regions == {"eu", "us"}
    for region in regions:
        checks = [c.what for c in report.checks if c.region == region]
        for tenant in fleet_lab.up.tenants:
            assert any(tenant.name in w and "GeoDNS" in w for w in checks), checks
            assert any(tenant.name in w and "HTTPS" in w for w in checks), checks
            assert any(tenant.name in w and "origin fetch" in w for w in checks), checks
        assert any(w.startswith("Prometheus") for w in checks), checks
    print(f"\nsmoke: {len(report.checks)} checks in {report.seconds:.1f} s")
    print("lab up: " + ", ".join(f"{t.name} {t.seconds:.0f} s" for t in fleet_lab.up.times))


def test_status_lists_every_host_running(fleet_lab: FleetLab) -> None:
    rows = {row.name: row for row in lab_status()}
    for _, host, role, address in fleet_lab.up.view.hosts:
        assert rows[host].state == "running", rows[host]
        assert rows[host].role == role and rows[host].address == address
    result = CliRunner().invoke(app, ["lab", "status"])
    assert result.exit_code == 0, result.output
    assert "eu-edge-1" in result.stdout and "running" in result.stdout


def test_a_second_up_changes_nothing_and_passes_again(fleet_lab: FleetLab) -> None:
    """Nothing site.yml reads changed: its converge is skipped (cdnctl.lab.converged), the
    certificates step issues and sends nothing, and the smoke test passes again."""
    again = lab_up(None, echo=print)
    assert again.smoke.ok, [c.detail for c in again.smoke.failed]
    steps = {t.name: round(t.seconds) for t in again.times}
    print(f"\nsecond lab up: {sum(steps.values())} s {steps}")
    assert "converge (unchanged)" in steps and "containers" not in steps, steps
    assert recap("certificates") == {"localhost": 0}


def recap(playbook: str) -> dict[str, int]:
    """changed= per host in the PLAY RECAP of the last run of a lab playbook (its log)."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"cdnctl-lab-{playbook}.log"
    text = log.read_text(encoding="utf-8").rpartition("PLAY RECAP")[2]
    changed = {}
    for line in text.splitlines():
        if "changed=" in line and " : " in line:
            changed[line.split(" : ")[0].strip()] = int(line.split("changed=")[1].split()[0])
    return changed
