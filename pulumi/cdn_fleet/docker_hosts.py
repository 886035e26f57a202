"""Local hosts: one systemd container per host on a shared Docker/podman network.

Works against podman's Docker-compatible API: podman runs a container whose command is
/sbin/init in systemd mode by itself. Ansible reaches the containers with the podman
connection plugin, so `ansible_host` is the container name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_docker as docker

from cdn_fleet.host import Machine
from cdnctl.fleet.topology import DockerSettings, HostSpec, RegionConfig

CONNECTION_VARS = {"ansible_connection": "containers.podman.podman"}


def declare_network(settings: DockerSettings) -> docker.Network:
    """The one bridge network all regions share, so regions reach each other as in production."""
    return docker.Network(
        "fleet-network",
        name=settings.network.name,
        driver="bridge",
        ipam_configs=[docker.NetworkIpamConfigArgs(subnet=settings.network.subnet)],
        labels=[docker.NetworkLabelArgs(label="cdn.fleet", value=settings.network.name)],
    )


class DockerBackend:
    """Declares regions as containers on `network`; a region has no resources of its own."""

    def __init__(self, network: docker.Network) -> None:
        self.network = network

    def declare_site(self, name: str, region: RegionConfig, parent: pulumi.Resource) -> DockerSite:
        return DockerSite(self.network)


class DockerSite:
    def __init__(self, network: docker.Network) -> None:
        self.network = network

    def declare_machine(self, name: str, spec: HostSpec, parent: pulumi.Resource) -> Machine:
        container = docker.Container(
            f"{name}-container",
            name=spec.name,
            hostname=spec.name,
            image=spec.size,
            command=["/sbin/init"],
            labels=[
                docker.ContainerLabelArgs(label="cdn.role", value=spec.role),
                docker.ContainerLabelArgs(label="cdn.region", value=spec.region),
            ],
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=self.network.name, aliases=[spec.name])
            ],
            restart="unless-stopped",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        # Nested applies: Output.all would turn the typed network data into plain dicts.
        address = self.network.name.apply(
            lambda network: container.network_datas.apply(
                lambda datas: _address_on(datas, network, spec.name)
            )
        )
        return Machine(
            ansible_host=container.name,
            public_address=address,
            private_address=address,
            connection_vars=CONNECTION_VARS,
        )


def _address_on(network_datas: Sequence[Any] | None, network: str, host: str) -> str:
    for data in network_datas or ():
        if data.network_name == network and data.ip_address:
            return data.ip_address
    raise ValueError(f"container {host} has no IPv4 address on network {network!r}")
