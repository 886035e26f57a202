"""Who may talk to which role of an AWS region: security groups and their rules.

The rule table (`ingress_rules`) is plain data so it reads (and is tested) as a policy:
only edges take 80/443 from the world and only DNS hosts take 53; shields take 80/443 from
edges only; SSH, the admin API and metrics come from the admin CIDRs (and Prometheus).
Security groups are per region (per VPC), so "from Prometheus" means the region's own.

One rule set is not per region: every DNS host checks every edge's `GET /health` on the
admin port (gdnsd answers for all regions, so it health-checks all edges), reaching them at
their elastic IPs; those rules (`HealthCheckRules`) name each DNS host's elastic IP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from cdn_fleet.aws_network import AwsRegionNetwork
from cdnctl.fleet.topology import ROLES, AdminAccess, RegionConfig

WORLD = "world"
ADMIN = "admin"
NODE_EXPORTER_PORT = 9100
GDNSD_EXPORTER_PORT = 9153  # roles/geodns' exporter (cdn_gdnsd_exporter_port's default)
DNS_ADMIN_PORT = 9154  # roles/geodns' drain agent (cdn_dns_admin_port's default): cdnctl drain
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
        Ingress("dns", "tcp", GDNSD_EXPORTER_PORT, source, "gdnsd exporter")
        for source in (ADMIN, "prometheus")
    )
    rules.append(Ingress("dns", "tcp", DNS_ADMIN_PORT, ADMIN, "drain agent"))
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


class HealthCheckRules:
    """Admin port of every region's edges open to every DNS host's elastic IP (/32).

    Regions are declared one after another, so an edge group may come before or after a
    DNS host of another region: each pair gets its rule when the second of the two appears.
    """

    def __init__(self, admin_api_port: int) -> None:
        self.port = admin_api_port
        self._edge_groups: list[tuple[str, aws.ec2.SecurityGroup, pulumi.ResourceOptions]] = []
        self._dns_hosts: list[tuple[str, pulumi.Output[str]]] = []

    def add_edge_group(
        self, name: str, group: aws.ec2.SecurityGroup, opts: pulumi.ResourceOptions
    ) -> None:
        self._edge_groups.append((name, group, opts))
        for host, address in self._dns_hosts:
            self._declare(name, group, opts, host, address)

    def add_dns_host(self, host: str, address: pulumi.Output[str]) -> None:
        self._dns_hosts.append((host, address))
        for name, group, opts in self._edge_groups:
            self._declare(name, group, opts, host, address)

    def _declare(
        self,
        name: str,
        group: aws.ec2.SecurityGroup,
        opts: pulumi.ResourceOptions,
        host: str,
        address: pulumi.Output[str],
    ) -> None:
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-sg-edge-tcp{self.port}-from-{host}",
            security_group_id=group.id,
            ip_protocol="tcp",
            from_port=self.port,
            to_port=self.port,
            cidr_ipv4=address.apply(lambda ip: f"{ip}/32"),
            description=f"dns health checks from {host}",
            opts=opts,
        )


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
