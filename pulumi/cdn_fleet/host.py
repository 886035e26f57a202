"""One host of the fleet (`cdn:fleet:Host`) and what a provider supplies to declare it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pulumi

from cdnctl.fleet.topology import HostSpec


@dataclass(frozen=True)
class Machine:
    """The provider resources behind one host, reduced to how Ansible reaches it."""

    ansible_host: pulumi.Input[str]
    public_address: pulumi.Input[str]
    private_address: pulumi.Input[str]
    # Extra per-host Ansible variables (e.g. the connection plugin for containers).
    connection_vars: Mapping[str, str]


class RegionSite(Protocol):
    """A provider's per-region resources (network, firewall) that hosts are declared in."""

    def declare_machine(self, name: str, spec: HostSpec, parent: pulumi.Resource) -> Machine:
        """Declare the machine for `spec` with resource names `f"{name}-..."`."""
        ...


@dataclass(frozen=True)
class HostArgs:
    spec: HostSpec
    site: RegionSite


class Host(pulumi.ComponentResource):
    """One host: its machine (container or instance) and its Ansible host variables."""

    inventory_vars: pulumi.Output[dict[str, Any]]

    def __init__(
        self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("cdn:fleet:Host", name, None, opts)
        self.spec = args.spec
        machine = args.site.declare_machine(name, args.spec, self)
        self.inventory_vars = pulumi.Output.all(
            ansible_host=machine.ansible_host,
            cdn_public_address=machine.public_address,
            cdn_private_address=machine.private_address,
        ).apply(
            lambda addresses: {
                **machine.connection_vars,
                **addresses,
                "cdn_region": args.spec.region,
                "cdn_role": args.spec.role,
            }
        )
        self.register_outputs(
            {
                "role": args.spec.role,
                "region": args.spec.region,
                "size": args.spec.size,
                "ansible_host": machine.ansible_host,
                "public_address": machine.public_address,
                "private_address": machine.private_address,
            }
        )
