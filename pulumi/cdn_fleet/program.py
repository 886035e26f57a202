"""The fleet program: from a validated `FleetConfig` to regions, hosts and stack outputs."""

from __future__ import annotations

from typing import Any

import pulumi

from cdn_fleet.aws_hosts import AwsBackend
from cdn_fleet.docker_hosts import DockerBackend, declare_network
from cdn_fleet.inventory import fleet_inventory
from cdn_fleet.region import Backend, Region, RegionArgs
from cdnctl.fleet.topology import FleetConfig


def build(fleet: FleetConfig) -> dict[str, pulumi.Output[Any]]:
    """Declare every region of `fleet`; return the stack outputs to export."""
    backend = _backend(fleet)
    regions = [
        Region(
            region.name,
            RegionArgs(region=region, hosts=fleet.host_specs(region), backend=backend),
        )
        for region in fleet.regions
    ]
    hosts = [host for region in regions for host in region.hosts]
    return {"inventory": fleet_inventory(fleet, hosts)}


def _backend(fleet: FleetConfig) -> Backend:
    if fleet.provider.kind == "docker":
        return DockerBackend(declare_network(fleet.provider.docker_settings), fleet)
    return AwsBackend(fleet.admin)
