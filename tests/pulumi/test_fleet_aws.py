"""The production stack (Pulumi.production.yaml): EC2 per region, and who may reach what."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from fleet_harness import Declared, FleetRun, stack_config

from cdnctl.fleet.topology import ROLES

INSTANCE = "aws:ec2/instance:Instance"
EIP = "aws:ec2/eip:Eip"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
WORLD = {"0.0.0.0/0", "::/0"}
ADMIN_CIDRS = {"198.51.100.0/24"}


def _group_of(run: FleetRun, group_id: str) -> Declared:
    (group,) = [g for g in run.of_type(SECURITY_GROUP) if g.id == group_id]
    return group


def _rules(run: FleetRun) -> list[tuple[str, str, str, int, str]]:
    """(region, role, protocol, port, source) of every ingress rule; source: cidr or role."""
    rules = []
    for rule in run.of_type(INGRESS):
        group = _group_of(run, rule.inputs["securityGroupId"])
        assert rule.inputs["fromPort"] == rule.inputs["toPort"]
        if "referencedSecurityGroupId" in rule.inputs:
            source_group = _group_of(run, rule.inputs["referencedSecurityGroupId"])
            assert source_group.inputs["tags"]["Region"] == group.inputs["tags"]["Region"]
            source = source_group.inputs["tags"]["Role"]
        else:
            source = rule.inputs.get("cidrIpv4") or rule.inputs["cidrIpv6"]
        rules.append(
            (
                group.inputs["tags"]["Region"],
                group.inputs["tags"]["Role"],
                rule.inputs["ipProtocol"],
                int(rule.inputs["fromPort"]),
                source,
            )
        )
    return rules


def test_one_instance_per_configured_host_sized_from_config(production_run: FleetRun) -> None:
    config = stack_config("production")
    default_type = config["provider"]["aws"]["instance_type"]
    expected = {
        f"{region['name']}-{role}-{number}": (spec.get("instance_type", default_type), region)
        for region in config["regions"]
        for role, spec in region["roles"].items()
        for number in range(1, spec["count"] + 1)
    }
    instances = {i.inputs["tags"]["Name"]: i for i in production_run.of_type(INSTANCE)}
    assert set(instances) == set(expected)
    for name, (instance_type, region) in expected.items():
        instance = instances[name]
        role = name.split("-")[1]
        assert instance.name == f"{name}-instance"
        assert instance.inputs["instanceType"] == instance_type
        assert instance.inputs["ami"] == region["aws"]["ami"]
        assert instance.inputs["tags"] == {"Name": name, "Role": role, "Region": region["name"]}
        assert instance.inputs["vpcSecurityGroupIds"] == [f"{region['name']}-sg-{role}-id"]
        assert instance.inputs["subnetId"] == f"{region['name']}-subnet-id"
        assert instance.inputs["keyName"] == f"{region['name']}-ssh-key"
        assert instance.inputs["metadataOptions"] == {"httpTokens": "required"}  # IMDSv2 only
    per_role = Counter(
        (i.inputs["tags"]["Region"], i.inputs["tags"]["Role"]) for i in instances.values()
    )
    assert per_role == Counter(
        {
            ("eu", "edge"): 3,
            ("eu", "shield"): 2,
            ("eu", "dns"): 2,
            ("eu", "prometheus"): 1,
            ("eu", "grafana"): 1,
            ("us", "edge"): 2,
            ("us", "shield"): 1,
            ("us", "dns"): 2,
            ("us", "prometheus"): 1,
        }
    )


def test_each_region_has_its_provider_and_network(production_run: FleetRun) -> None:
    providers = {p.name: p.inputs["region"] for p in production_run.of_type("pulumi:providers:aws")}
    assert providers == {"eu-provider": "eu-west-1", "us-provider": "us-east-1"}
    vpcs = {v.name: v.inputs["cidrBlock"] for v in production_run.of_type("aws:ec2/vpc:Vpc")}
    assert vpcs == {"eu-vpc": "10.10.0.0/16", "us-vpc": "10.20.0.0/16"}
    subnets = {s.name: s.inputs for s in production_run.of_type("aws:ec2/subnet:Subnet")}
    assert subnets["eu-subnet"]["cidrBlock"] == "10.10.1.0/24"
    assert subnets["eu-subnet"]["availabilityZone"] == "eu-west-1a"
    assert subnets["us-subnet"]["cidrBlock"] == "10.20.0.0/24"  # default: the VPC's first /24
    for table in production_run.of_type("aws:ec2/routeTable:RouteTable"):
        region = table.name.split("-")[0]
        assert table.inputs["routes"] == [
            {"cidrBlock": "0.0.0.0/0", "gatewayId": f"{region}-igw-id"}
        ]


def test_elastic_ips_for_edges_and_dns_only(production_run: FleetRun) -> None:
    eips = production_run.of_type(EIP)
    attached = {e.inputs["instance"].removesuffix("-instance-id") for e in eips}
    roles = {
        i.inputs["tags"]["Name"]: i.inputs["tags"]["Role"] for i in production_run.of_type(INSTANCE)
    }
    assert attached == {name for name, role in roles.items() if role in ("edge", "dns")}
    assert all(e.inputs["domain"] == "vpc" for e in eips)
    hosts = production_run.outputs["inventory"]["hosts"]
    for eip in eips:
        name = eip.inputs["instance"].removesuffix("-instance-id")
        assert hosts[name]["cdn_public_address"] == eip.state["publicIp"]
        assert hosts[name]["ansible_host"] == eip.state["publicIp"]


def test_only_edges_web_and_dns_are_open_to_the_world(production_run: FleetRun) -> None:
    open_to_world = {
        (region, role, protocol, port)
        for region, role, protocol, port, source in _rules(production_run)
        if source in WORLD
    }
    assert open_to_world == {
        (region, role, protocol, port)
        for region in ("eu", "us")
        for role, protocol, port in (
            ("edge", "tcp", 80),
            ("edge", "tcp", 443),
            ("dns", "udp", 53),
            ("dns", "tcp", 53),
        )
    }


@pytest.mark.parametrize(
    ("protocol", "port", "sources_by_role"),
    [
        ("tcp", 22, dict.fromkeys(ROLES, ADMIN_CIDRS)),
        ("tcp", 9100, dict.fromkeys(ROLES, ADMIN_CIDRS | {"prometheus"})),
        ("tcp", 9145, {"shield": ADMIN_CIDRS | {"prometheus"}}),
        ("tcp", 9153, {"dns": ADMIN_CIDRS | {"prometheus"}}),
        ("tcp", 9154, {"dns": ADMIN_CIDRS}),
        ("tcp", 80, {"edge": {"0.0.0.0/0"}, "shield": {"edge"}}),
        ("tcp", 443, {"edge": {"0.0.0.0/0"}, "shield": {"edge"}}),
        ("tcp", 9090, {"prometheus": ADMIN_CIDRS | {"grafana"}}),
        ("tcp", 3000, {"grafana": ADMIN_CIDRS}),
    ],
)
def test_each_port_takes_only_its_sources(
    production_run: FleetRun, protocol: str, port: int, sources_by_role: dict[str, set[str]]
) -> None:
    sources: dict[tuple[str, str], set[str]] = defaultdict(set)
    for region, role, rule_protocol, rule_port, source in _rules(production_run):
        if (rule_protocol, rule_port) == (protocol, port):
            sources[region, role].add(source)
    if port == 9145:  # edges: also every DNS host (test_every_dns_host_health_checks_...)
        sources = {key: value for key, value in sources.items() if key[1] != "edge"}
    assert sources == {
        (region, role): allowed
        for region in ("eu", "us")
        for role, allowed in sources_by_role.items()
    }


def _dns_addresses(run: FleetRun) -> set[str]:
    return {
        f"{e.state['publicIp']}/32" for e in run.of_type(EIP) if e.inputs["tags"]["Role"] == "dns"
    }


def test_every_dns_host_health_checks_every_regions_edges(production_run: FleetRun) -> None:
    """gdnsd on any DNS host checks all edges' GET /health: the admin port takes its EIP."""
    dns_addresses = _dns_addresses(production_run)
    assert len(dns_addresses) == sum(
        region["roles"]["dns"]["count"] for region in stack_config("production")["regions"]
    )
    for region in ("eu", "us"):
        sources = {
            source
            for rule_region, role, protocol, port, source in _rules(production_run)
            if (rule_region, role, protocol, port) == (region, "edge", "tcp", 9145)
        }
        assert sources == ADMIN_CIDRS | {"prometheus"} | dns_addresses


def test_no_other_inbound_ports(production_run: FleetRun) -> None:
    ports = {(protocol, port) for _, _, protocol, port, _ in _rules(production_run)}
    assert ports == {("tcp", p) for p in (22, 80, 443, 53, 3000, 9090, 9100, 9145, 9153, 9154)} | {
        ("udp", 53)
    }


def test_admin_api_port_comes_from_config() -> None:
    from fleet_harness import run_fleet

    config = stack_config("production")
    config["admin"]["api_port"] = 8443
    config["admin"]["cidrs"] = ["198.51.100.0/24", "2001:db8:ffff::/48"]
    run = run_fleet(config)
    rules = _rules(run)
    api = {(role, source) for region, role, _, port, source in rules if port == 8443}
    assert api == {
        (role, source)
        for role in ("edge", "shield")
        for source in ("198.51.100.0/24", "2001:db8:ffff::/48", "prometheus")
    } | {("edge", address) for address in _dns_addresses(run)}
    assert not [rule for rule in rules if rule[3] == 9145]


def test_every_group_may_reach_out_and_has_a_name(production_run: FleetRun) -> None:
    groups = production_run.of_type(SECURITY_GROUP)
    assert sorted(g.name for g in groups) == sorted(
        f"{region}-sg-{role}" for region in ("eu", "us") for role in ROLES
    )
    egress = {e.inputs["securityGroupId"] for e in production_run.of_type(EGRESS)}
    assert egress == {g.id for g in groups}


def test_inventory_logs_in_over_ssh_on_public_addresses(production_run: FleetRun) -> None:
    instances = {i.inputs["tags"]["Name"]: i for i in production_run.of_type(INSTANCE)}
    for name, host_vars in production_run.outputs["inventory"]["hosts"].items():
        assert host_vars["ansible_user"] == "admin"
        assert "ansible_connection" not in host_vars
        assert host_vars["ansible_host"] == host_vars["cdn_public_address"]
        assert host_vars["cdn_private_address"] == instances[name].state["privateIp"]
        if host_vars["cdn_role"] not in ("edge", "dns"):
            assert host_vars["cdn_public_address"] == instances[name].state["publicIp"]
