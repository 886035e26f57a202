"""One region of the fleet (`cdn:fleet:Region`): its provider site and all its hosts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pulumi

from cdn_fleet.host import Host, HostArgs, RegionSite
from cdnctl.fleet.topology import HostSpec, RegionConfig


class Backend(Protocol):
    """A provider (docker, aws) able to declare the per-region resources hosts live in."""

    def declare_site(self, name: str, region: RegionConfig, parent: pulumi.Resource) -> RegionSite:
        """Declare the region's shared resources with names `f"{name}-..."`."""
        ...


@dataclass(frozen=True)
class RegionArgs:
    region: RegionConfig
    hosts: list[HostSpec]
    backend: Backend


class Region(pulumi.ComponentResource):
    """A region: provider site (network, firewall) plus one `Host` per configured host."""

    hosts: list[Host]

    def __init__(
        self, name: str, args: RegionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("cdn:fleet:Region", name, None, opts)
        site = args.backend.declare_site(name, args.region, self)
        self.hosts = [
            Host(
                f"{name}-{spec.role}-{spec.number}",
                HostArgs(spec=spec, site=site),
                pulumi.ResourceOptions(parent=self),
            )
            for spec in args.hosts
        ]
        self.register_outputs(
            {
                "region": args.region.name,
                "client_networks": args.region.client_networks,
                "hosts": {host.spec.name: host.inventory_vars for host in self.hosts},
            }
        )
