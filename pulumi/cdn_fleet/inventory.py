"""The `inventory` stack output: every host with its Ansible variables, and the groups.

Shape (checked and turned into an Ansible inventory by `cdnctl inventory from-pulumi`,
see src/cdnctl/inventory.py):
    {"hosts": {name: {cdn_region, cdn_role, ansible_host, cdn_public_address,
                      cdn_private_address, + connection vars}},
     "groups": {"edge": [...], "shield": [...], "dns": [...], "prometheus": [...],
                "grafana": [...], "region_<name>": [...]},
     "vars": {cdn_domain, cdn_admin_api_port, cdn_admin_cidrs, cdn_regions}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from cdn_fleet.host import Host
from cdnctl.fleet.inventory import region_group
from cdnctl.fleet.topology import ROLES, FleetConfig


def fleet_inventory(fleet: FleetConfig, hosts: Sequence[Host]) -> pulumi.Output[dict[str, Any]]:
    groups: dict[str, list[str]] = {role: [] for role in ROLES}
    groups.update({region_group(region.name): [] for region in fleet.regions})
    for host in hosts:
        groups[host.spec.role].append(host.spec.name)
        groups[region_group(host.spec.region)].append(host.spec.name)
    names = [host.spec.name for host in hosts]
    return pulumi.Output.all(*(host.inventory_vars for host in hosts)).apply(
        lambda host_vars: {
            "hosts": dict(zip(names, host_vars, strict=True)),
            "groups": {group: sorted(members) for group, members in groups.items()},
            "vars": fleet.inventory_vars(),
        }
    )
