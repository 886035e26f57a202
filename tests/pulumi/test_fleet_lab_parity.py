"""The lab runs exactly the topology a `pulumi up` of the local stack declares."""

from __future__ import annotations

import yaml
from fleet_harness import PROJECT_DIR, FleetRun

from cdnctl.fleet.inventory import render_inventory
from cdnctl.lab.topology import (
    FLEET_INVENTORY,
    LAB_INVENTORY,
    load_lab_topology,
    stack_output,
    write_inventory,
)


def test_lab_inventory_is_the_pulumi_local_stacks_inventory(local_run: FleetRun) -> None:
    fleet = load_lab_topology(PROJECT_DIR / "Pulumi.local.yaml")
    lab = stack_output(fleet)["inventory"]
    pulumi = local_run.outputs["inventory"]
    assert lab["groups"] == pulumi["groups"]
    assert lab["hosts"] == pulumi["hosts"]  # names, roles, regions, addresses, connection
    assert lab["vars"] == pulumi["vars"]
    assert render_inventory({"inventory": lab}) == render_inventory({"inventory": pulumi})


def test_lab_writes_the_fleet_and_its_own_hosts_apart(tmp_path) -> None:
    fleet = load_lab_topology(PROJECT_DIR / "Pulumi.local.yaml")
    write_inventory(fleet, tmp_path)
    fleet_file = yaml.safe_load((tmp_path / FLEET_INVENTORY).read_text())
    lab_file = yaml.safe_load((tmp_path / LAB_INVENTORY).read_text())
    assert "origin" not in fleet_file["all"]["children"]
    (origin,) = lab_file["all"]["children"]["origin"]["hosts"]
    address = lab_file["all"]["hosts"][origin]["cdn_private_address"]
    fleet_addresses = {h["cdn_private_address"] for h in fleet_file["all"]["hosts"].values()}
    assert address not in fleet_addresses
