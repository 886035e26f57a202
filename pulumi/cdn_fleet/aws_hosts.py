"""Production hosts: EC2 instances per region, elastic IPs for edges and DNS hosts."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from cdn_fleet.aws_network import AwsRegionNetwork, declare_network
from cdn_fleet.aws_security import HealthCheckRules, declare_security_groups
from cdn_fleet.host import Machine
from cdnctl.fleet.topology import AdminAccess, HostSpec, RegionConfig

# Clients and resolvers reach these roles by address (DNS records, NS glue): keep it stable.
ROLES_WITH_ELASTIC_IP = ("edge", "dns")


class AwsBackend:
    """Declares each region as a VPC with per-role security groups and one instance per host."""

    def __init__(self, admin: AdminAccess) -> None:
        self.admin = admin
        self.health_checks = HealthCheckRules(admin.api_port)

    def declare_site(self, name: str, region: RegionConfig, parent: pulumi.Resource) -> AwsSite:
        if self.admin.ssh_public_key is None or region.aws is None:
            raise ValueError("FleetConfig guarantees ssh_public_key and aws settings for aws")
        network = declare_network(name, region, parent)
        key_pair = aws.ec2.KeyPair(
            f"{name}-ssh-key",
            public_key=self.admin.ssh_public_key,
            tags={"Region": region.name},
            opts=network.opts(parent),
        )
        groups = declare_security_groups(name, region, self.admin, network, parent)
        self.health_checks.add_edge_group(name, groups["edge"], network.opts(parent))
        return AwsSite(
            network, key_pair, groups, region.aws.ami, self.admin.ssh_user, self.health_checks
        )


class AwsSite:
    def __init__(
        self,
        network: AwsRegionNetwork,
        key_pair: aws.ec2.KeyPair,
        groups: dict[str, aws.ec2.SecurityGroup],
        ami: str,
        ssh_user: str,
        health_checks: HealthCheckRules,
    ) -> None:
        self.network = network
        self.key_pair = key_pair
        self.groups = groups
        self.ami = ami
        self.ssh_user = ssh_user
        self.health_checks = health_checks

    def declare_machine(self, name: str, spec: HostSpec, parent: pulumi.Resource) -> Machine:
        opts = self.network.opts(parent)
        tags = {"Name": spec.name, "Role": spec.role, "Region": spec.region}
        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=self.ami,
            instance_type=spec.size,
            subnet_id=self.network.subnet.id,
            vpc_security_group_ids=[self.groups[spec.role].id],
            key_name=self.key_pair.key_name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required"),
            tags=tags,
            opts=opts,
        )
        public_address: pulumi.Input[str] = instance.public_ip
        if spec.role in ROLES_WITH_ELASTIC_IP:
            public_address = aws.ec2.Eip(
                f"{name}-eip", domain="vpc", instance=instance.id, tags=tags, opts=opts
            ).public_ip
        if spec.role == "dns":
            self.health_checks.add_dns_host(spec.name, pulumi.Output.from_input(public_address))
        return Machine(
            ansible_host=public_address,
            public_address=public_address,
            private_address=instance.private_ip,
            connection_vars={"ansible_user": self.ssh_user},
        )
