"""The network of an AWS region: its provider, a VPC with one public subnet, routing."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from cdnctl.fleet.topology import RegionConfig


@dataclass(frozen=True)
class AwsRegionNetwork:
    provider: aws.Provider
    vpc: aws.ec2.Vpc
    subnet: aws.ec2.Subnet

    def opts(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """Options for a resource of this region (its provider, under `parent`)."""
        return pulumi.ResourceOptions(parent=parent, provider=self.provider)


def declare_network(name: str, region: RegionConfig, parent: pulumi.Resource) -> AwsRegionNetwork:
    """A VPC with one public subnet routed to an internet gateway, in region.aws.region."""
    if region.aws is None:  # guaranteed by FleetConfig for provider.kind aws
        raise ValueError(f"region {region.name!r} has no aws settings")
    settings = region.aws
    provider = aws.Provider(
        f"{name}-provider", region=settings.region, opts=pulumi.ResourceOptions(parent=parent)
    )
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)
    tags = {"Region": region.name}
    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=settings.vpc_cidr,
        enable_dns_support=True,
        enable_dns_hostnames=True,
        tags={**tags, "Name": f"cdn-{region.name}"},
        opts=opts,
    )
    gateway = aws.ec2.InternetGateway(
        f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"cdn-{region.name}"}, opts=opts
    )
    subnet = aws.ec2.Subnet(
        f"{name}-subnet",
        vpc_id=vpc.id,
        cidr_block=settings.public_subnet_cidr,
        availability_zone=settings.availability_zone,
        map_public_ip_on_launch=True,
        tags={**tags, "Name": f"cdn-{region.name}-public"},
        opts=opts,
    )
    routes = aws.ec2.RouteTable(
        f"{name}-routes",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
        tags={**tags, "Name": f"cdn-{region.name}-public"},
        opts=opts,
    )
    aws.ec2.RouteTableAssociation(
        f"{name}-routes-subnet", subnet_id=subnet.id, route_table_id=routes.id, opts=opts
    )
    return AwsRegionNetwork(provider=provider, vpc=vpc, subnet=subnet)
