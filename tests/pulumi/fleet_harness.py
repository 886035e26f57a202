"""Pulumi unit-test harness: mocks that answer like the providers, and one-call program runs.

The Pulumi CLI and provider plugins are not installable on the project's machines; these
mocks stand in for the engine. They must be installed before the program's modules are
imported, so importing this module installs them and puts pulumi/ on sys.path. (A module
of its own, not conftest.py: every conftest.py outside a package is named `conftest`.)
"""

from __future__ import annotations

import ipaddress
import itertools
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2] / "pulumi"
sys.path.insert(0, str(PROJECT_DIR))

with warnings.catch_warnings():
    # pulumi_aws.ec2 warns when it loads (on first use) about a resource the fleet does not use.
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_aws

    pulumi_aws.ec2.Vpc  # noqa: B018  (the attribute access is what loads the module)


@dataclass(frozen=True)
class Declared:
    """One resource the program registered, with the state the mock provider returned."""

    typ: str
    name: str
    inputs: dict[str, Any]
    state: dict[str, Any]
    id: str


class FleetMocks(pulumi.runtime.Mocks):
    """Answers like docker/aws would: container addresses, instance and elastic IPs, ids."""

    def __init__(self) -> None:
        self.declared: list[Declared] = []
        # Start past the gateway (.1) as podman's IPAM does on a fresh network.
        self._container_ips = itertools.islice(
            ipaddress.ip_network("10.90.0.0/24").hosts(), 9, None
        )
        self._private_ips = itertools.count(10)
        self._public_ips = ipaddress.ip_network("203.0.113.0/24").hosts()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id = f"{args.name}-id"
        state = {**args.inputs, **self._provider_state(args)}
        self.declared.append(Declared(args.typ, args.name, args.inputs, state, resource_id))
        return resource_id, state

    def _provider_state(self, args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
        if args.typ == "docker:index/container:Container":
            return {
                "networkDatas": [
                    {
                        "networkName": network["name"],
                        # Docker gives a container the address it asks for, else the next.
                        "ipAddress": network.get("ipv4Address") or str(next(self._container_ips)),
                        "ipPrefixLength": 24,
                    }
                    for network in args.inputs.get("networksAdvanced", [])
                ]
            }
        if args.typ == "aws:ec2/instance:Instance":
            return {
                "privateIp": f"10.0.0.{next(self._private_ips)}",
                "publicIp": str(next(self._public_ips)),
            }
        if args.typ == "aws:ec2/eip:Eip":
            return {"publicIp": str(next(self._public_ips))}
        if args.typ == "aws:ec2/keyPair:KeyPair":
            return {"keyName": args.name}
        return {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        return {}, []


pulumi.runtime.set_mocks(FleetMocks(), preview=False)


@dataclass
class FleetRun:
    """What one run of the program declared and exported."""

    outputs: dict[str, Any]
    declared: list[Declared] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Declared]:
        return [resource for resource in self.declared if resource.typ == typ]

    def named(self, name: str) -> Declared:
        (resource,) = (resource for resource in self.declared if resource.name == name)
        return resource


def stack_config(stack: str) -> dict[str, Any]:
    """The raw `cdn:fleet` object of the checked-in Pulumi.<stack>.yaml."""
    document = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())
    return document["config"]["cdn:fleet"]


def run_fleet(raw: dict[str, Any]) -> FleetRun:
    """Validate `raw` and run the program under fresh mocks; wait for every resource."""
    from cdn_fleet.program import build
    from cdnctl.fleet.topology import load_fleet_config

    mocks = FleetMocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    run = FleetRun(outputs={})
    fleet = load_fleet_config(raw)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        return pulumi.Output.all(**build(fleet)).apply(run.outputs.update)

    program()  # returns once every registration RPC finished, so `declared` is complete
    run.declared = mocks.declared
    return run
