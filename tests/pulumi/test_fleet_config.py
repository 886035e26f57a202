"""The `cdn:fleet` stack config: the checked-in stacks parse, bad configs fail clearly."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fleet_harness import stack_config

from cdnctl.fleet.topology import FleetConfigError, load_fleet_config


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the dotted `path` (list indexes as numbers) to `value`."""

    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
        node: Any = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def _duplicate_first_region(raw: dict[str, Any]) -> None:
    raw["regions"].append(copy.deepcopy(raw["regions"][0]))


BAD_LOCAL_CONFIGS = {
    "unknown top-level key": (
        _set("regoins", []),
        ["cdn:fleet.regoins: unknown key 'regoins'", "allowed here: admin, domain, provider"],
    ),
    "unknown role": (
        _set("regions.0.roles.edges", {"count": 1}),
        ["cdn:fleet.regions[0] ('eu').roles.edges: unknown key 'edges'", "edge, grafana"],
    ),
    "unknown role key": (
        _set("regions.1.roles.edge.size", "big"),
        ["cdn:fleet.regions[1] ('us').roles.edge.size: unknown key 'size'", "count, image"],
    ),
    "no dns in a region with edges": (
        _set("regions.1.roles.dns.count", 0),
        [
            "cdn:fleet.regions[1] ('us'): roles.dns.count is 0 but roles.edge.count is 2",
            "set roles.dns.count to at least 1",
        ],
    ),
    "more edges than a local region has addresses for": (
        _set("regions.0.roles.edge.count", 17),
        [
            "cdn:fleet: regions[0] ('eu').roles.edge.count is 17",
            "addresses for 16 edge host(s) at most",
        ],
    ),
    "more regions than the subnet has room for": (
        _set("provider.docker.network.subnet", "10.90.0.0/26"),
        ["subnet 10.90.0.0/26 has addresses for 1 region(s)", "use a larger subnet"],
    ),
    "negative count": (
        _set("regions.0.roles.shield.count", -1),
        [
            "cdn:fleet.regions[0] ('eu').roles.shield.count: count is -1",
            "use 0 for no hosts",
        ],
    ),
    "duplicate region names": (
        _duplicate_first_region,
        ["cdn:fleet: regions[2].name 'eu' is already used by regions[0]", "must be unique"],
    ),
    "client network with host bits": (
        _set("regions.0.client_networks.0", "192.0.2.1/24"),
        [
            "cdn:fleet.regions[0] ('eu').client_networks[0]: '192.0.2.1/24' is not a network",
            "host bits zero",
        ],
    ),
    "client network not an address": (
        _set("regions.0.client_networks.1", "europe"),
        ["regions[0] ('eu').client_networks[1]: 'europe' is not a network in CIDR notation"],
    ),
    "bad docker subnet": (
        _set("provider.docker.network.subnet", "10.90.0.0/33"),
        ["cdn:fleet.provider.docker.network.subnet: '10.90.0.0/33' is not a network"],
    ),
    "upper-case region name": (
        _set("regions.0.name", "EU"),
        ["cdn:fleet.regions[0] ('EU').name: 'EU' is not a valid region name", "^[a-z]"],
    ),
    "region name with a dash": (
        _set("regions.1.name", "us-east"),
        ["regions[1] ('us-east').name: 'us-east' is not a valid region name"],
    ),
    "region name too long": (
        _set("regions.1.name", "a" * 17),
        ["is not a valid region name", "up to 15"],
    ),
    "admin cidr open to the world": (
        _set("admin.cidrs", ["0.0.0.0/0"]),
        ["cdn:fleet.admin.cidrs[0]: '0.0.0.0/0' would open SSH"],
    ),
    "admin api on a taken port": (
        _set("admin.api_port", 443),
        ["cdn:fleet.admin.api_port: api_port 443 is not usable", "9145"],
    ),
    "instance type on docker": (
        _set("regions.0.roles.edge.instance_type", "c6i.large"),
        ["regions[0] ('eu').roles.edge.instance_type does not apply to provider.kind 'docker'"],
    ),
    "aws settings on docker": (
        _set("provider.aws", {"instance_type": "t3.small"}),
        ["cdn:fleet.provider: provider.aws is set but provider.kind is 'docker'"],
    ),
    "unknown provider kind": (
        _set("provider.kind", "gcp"),
        ["cdn:fleet.provider.kind: Input should be 'docker' or 'aws' (got 'gcp')"],
    ),
    "missing domain": (
        lambda raw: raw.pop("domain"),
        ["cdn:fleet.domain: required key is missing"],
    ),
    "no regions": (
        _set("regions", []),
        ["cdn:fleet.regions: List should have at least 1 item"],
    ),
}

BAD_PRODUCTION_CONFIGS = {
    "region without aws settings": (
        lambda raw: raw["regions"][1].pop("aws"),
        ["regions[1] ('us') has no 'aws' settings", "region, ami and vpc_cidr"],
    ),
    "no ssh key": (
        lambda raw: raw["admin"].pop("ssh_public_key"),
        ["admin.ssh_public_key is missing"],
    ),
    "subnet outside the vpc": (
        _set("regions.0.aws.subnet_cidr", "10.99.1.0/24"),
        ["regions[0] ('eu').aws: subnet_cidr '10.99.1.0/24' is not inside vpc_cidr"],
    ),
    "bad vpc cidr": (
        _set("regions.0.aws.vpc_cidr", "10.10.0.0"),
        ["regions[0] ('eu').aws.vpc_cidr: '10.10.0.0' is not a network", "/prefix"],
    ),
    "image on aws": (
        _set("regions.1.roles.dns.image", "debian"),
        ["regions[1] ('us').roles.dns.image does not apply to provider.kind 'aws'"],
    ),
}


def _expect_errors(raw: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(FleetConfigError) as caught:
        load_fleet_config(raw)
    message = str(caught.value)
    assert message.startswith("invalid stack config 'cdn:fleet':")
    for fragment in expected:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("mutate", "expected"), list(BAD_LOCAL_CONFIGS.values()), ids=list(BAD_LOCAL_CONFIGS)
)
def test_bad_local_config_is_rejected_naming_field_value_and_fix(
    local_config: dict[str, Any], mutate: Callable[[dict[str, Any]], None], expected: list[str]
) -> None:
    mutate(local_config)
    _expect_errors(local_config, expected)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    list(BAD_PRODUCTION_CONFIGS.values()),
    ids=list(BAD_PRODUCTION_CONFIGS),
)
def test_bad_production_config_is_rejected_naming_field_value_and_fix(
    production_config: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    expected: list[str],
) -> None:
    mutate(production_config)
    _expect_errors(production_config, expected)


def test_every_problem_is_reported_at_once(local_config: dict[str, Any]) -> None:
    local_config["regions"][0]["name"] = "EU"
    local_config["regions"][1]["roles"]["edge"]["count"] = -2
    local_config["colour"] = "blue"
    with pytest.raises(FleetConfigError) as caught:
        load_fleet_config(local_config)
    assert len(caught.value.problems) == 3


def test_config_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(FleetConfigError, match="expected a mapping with domain"):
        load_fleet_config(["eu", "us"])


@pytest.mark.parametrize("stack", ["local", "production"])
def test_checked_in_stacks_are_valid_with_two_regions(stack: str) -> None:
    fleet = load_fleet_config(stack_config(stack))
    assert [region.name for region in fleet.regions] == ["eu", "us"]


def test_host_specs_number_hosts_per_role_and_size_them_from_config() -> None:
    fleet = load_fleet_config(stack_config("production"))
    eu = fleet.regions[0]
    specs = {spec.name: spec for spec in fleet.host_specs(eu)}
    assert list(specs) == [
        "eu-edge-1",
        "eu-edge-2",
        "eu-edge-3",
        "eu-shield-1",
        "eu-shield-2",
        "eu-dns-1",
        "eu-dns-2",
        "eu-prometheus-1",
        "eu-grafana-1",
    ]
    assert specs["eu-edge-3"].size == "c6i.large"
    assert specs["eu-grafana-1"].size == "t3.small"  # provider.aws.instance_type default


def test_defaults_fill_in_docker_settings_and_missing_roles(local_config: dict[str, Any]) -> None:
    del local_config["provider"]["docker"]
    del local_config["regions"][1]["roles"]["grafana"]
    fleet = load_fleet_config(local_config)
    assert fleet.provider.docker_settings.image == "localhost/cdnctl-systemd:bookworm"
    assert fleet.regions[1].roles.grafana.count == 0
    assert fleet.admin.api_port == 9145
