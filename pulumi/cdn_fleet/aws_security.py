"""Who may talk to which role of an AWS region: security groups and their rules.

The rule table (`ingress_rules`) is plain data so it reads (and is tested) as a policy:
only edges take 80/443 from the world and only DNS hosts take 53; shields take 80/443 from
edges only; SSH, the admin API and metrics come from the admin CIDRs (and Prometheus).
Security groups are per region (per VPC), so "from Prometheus" means the region's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from cdn_fleet.aws_network import AwsRegionNetwork
from cdn_fleet.config import ROLES, AdminAccess, RegionConfig

WORLD = "world"
ADMIN = "admin"
NODE_EXPORTER_PORT = 9100
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000


@dataclass(frozen=True)
class Ingress:
    role: str  # the role whose security group holds the rule
    protocol: Literal["tcp", "udp"]
    port: int
    source: str  # WORLD, ADMIN (admin.cidrs) or a role (that role's security group)
    purpose: str


def ingress_rules(admin_api_port: int) -> list[Ingress]:
    """Every inbound rule of the fleet, in a stable order."""
    rules = []
    for role in ROLES:
        rules.append(Ingress(role, "tcp", 22, ADMIN, "ssh"))
        rules.extend(
            Ingress(role, "tcp", NODE_EXPORTER_PORT, source, "node exporter")
            for source in (ADMIN, "prometheus")
        )
    for port in (80, 443):
        rules.append(Ingress("edge", "tcp", port, WORLD, "tenant traffic"))
        rules.append(Ingress("shield", "tcp", port, "edge", "edge to shield"))
    rules.extend(
        Ingress(role, "tcp", admin_api_port, source, "admin api and metrics")
        for role in ("edge", "shield")
        for source in (ADMIN, "prometheus")
    )
    rules.extend(Ingress("dns", protocol, 53, WORLD, "geodns") for protocol in ("udp", "tcp"))
    rules.extend(
        Ingress("prometheus", "tcp", PROMETHEUS_PORT, source, "prometheus api")
        for source in (ADMIN, "grafana")
    )
    rules.append(Ingress("grafana", "tcp", GRAFANA_PORT, ADMIN, "grafana ui"))
    return rules


def declare_security_groups(
    name: str,
    region: RegionConfig,
    admin: AdminAccess,
    network: AwsRegionNetwork,
    parent: pulumi.Resource,
) -> dict[str, aws.ec2.SecurityGroup]:
    """One security group per role with the rules of `ingress_rules`; all egress allowed."""
    opts = network.opts(parent)
    groups = {
        role: aws.ec2.SecurityGroup(
            f"{name}-sg-{role}",
            vpc_id=network.vpc.id,
            description=f"cdn {role} hosts of region {region.name}",
            tags={"Name": f"cdn-{region.name}-{role}", "Role": role, "Region": region.name},
            opts=opts,
        )
        for role in ROLES
    }
    for role, group in groups.items():
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-sg-{role}-egress",
            security_group_id=group.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="outbound: packages, origins, ACME",
            opts=opts,
        )
    for rule in ingress_rules(admin.api_port):
        for source_name, source in _sources(rule.source, admin, groups):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-sg-{rule.role}-{rule.protocol}{rule.port}-from-{source_name}",
                security_group_id=groups[rule.role].id,
                ip_protocol=rule.protocol,
                from_port=rule.port,
                to_port=rule.port,
                description=rule.purpose,
                opts=opts,
                **source,
            )
    return groups


def _sources(
    source: str, admin: AdminAccess, groups: dict[str, aws.ec2.SecurityGroup]
) -> list[tuple[str, dict[str, Any]]]:
    """(name suffix, rule arguments) for each network a rule's source stands for."""
    if source == WORLD:
        return [(WORLD, {"cidr_ipv4": "0.0.0.0/0"})]
    if source == ADMIN:
        return [(f"{ADMIN}-{_slug(cidr)}", _cidr_argument(cidr)) for cidr in admin.cidrs]
    return [(source, {"referenced_security_group_id": groups[source].id})]


def _cidr_argument(cidr: str) -> dict[str, str]:
    return {"cidr_ipv6": cidr} if ":" in cidr else {"cidr_ipv4": cidr}


def _slug(cidr: str) -> str:
    return re.sub(r"[^0-9a-f]+", "-", cidr.lower()).strip("-")
