"""Local hosts: one systemd container per host on a shared Docker/podman network.

Works against podman's Docker-compatible API: podman runs a container whose command is
/sbin/init in systemd mode by itself. Ansible reaches the containers with the podman
connection plugin, so `ansible_host` is the container name.
"""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from cdn_fleet.host import Machine
from cdnctl.fleet.topology import DockerSettings, FleetConfig, HostSpec, RegionConfig

CONNECTION_VARS = {"ansible_connection": "cdnctl_podman"}


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

    def __init__(self, network: docker.Network, fleet: FleetConfig) -> None:
        self.network = network
        self.fleet = fleet

    def declare_site(self, name: str, region: RegionConfig, parent: pulumi.Resource) -> DockerSite:
        return DockerSite(self.network, self.fleet)


class DockerSite:
    def __init__(self, network: docker.Network, fleet: FleetConfig) -> None:
        self.network = network
        self.fleet = fleet

    def declare_machine(self, name: str, spec: HostSpec, parent: pulumi.Resource) -> Machine:
        # The topology's fixed address: the lab (cdnctl lab up) gives the host the same one.
        address = self.fleet.host_address(spec)
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
                docker.ContainerNetworksAdvancedArgs(
                    name=self.network.name, aliases=[spec.name], ipv4_address=address
                )
            ],
            restart="unless-stopped",
            opts=pulumi.ResourceOptions(parent=parent),
        )
        return Machine(
            ansible_host=container.name,
            public_address=address,
            private_address=address,
            connection_vars=CONNECTION_VARS,
        )
