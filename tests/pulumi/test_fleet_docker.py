"""The local stack (Pulumi.local.yaml): systemd containers on one podman network."""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from fleet_harness import FleetRun, stack_config

from cdnctl.fleet.topology import ROLES

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"


def _labels(container: Any) -> dict[str, str]:
    return {item["label"]: item["value"] for item in container.inputs["labels"]}


def test_one_container_per_configured_host_per_role_and_region(local_run: FleetRun) -> None:
    config = stack_config("local")
    expected = Counter(
        {
            (region["name"], role): spec["count"]
            for region in config["regions"]
            for role, spec in region["roles"].items()
        }
    )
    containers = local_run.of_type(CONTAINER)
    actual = Counter((_labels(c)["cdn.region"], _labels(c)["cdn.role"]) for c in containers)
    assert +actual == +expected
    assert len(containers) == sum(expected.values()) == 11


def test_containers_boot_systemd_from_the_configured_image(local_run: FleetRun) -> None:
    for container in local_run.of_type(CONTAINER):
        labels = _labels(container)
        name = container.inputs["name"]
        assert name.startswith(f"{labels['cdn.region']}-{labels['cdn.role']}-")
        assert container.name == f"{name}-container"
        assert container.inputs["hostname"] == name
        assert container.inputs["image"] == "localhost/cdnctl-systemd:bookworm"
        assert container.inputs["command"] == ["/sbin/init"]
        assert container.inputs["restart"] == "unless-stopped"


def test_every_container_is_on_the_one_fleet_network(local_run: FleetRun) -> None:
    (network,) = local_run.of_type(NETWORK)
    assert network.inputs["name"] == "cdn-fleet"
    assert network.inputs["ipamConfigs"] == [{"subnet": "10.90.0.0/24"}]
    for container in local_run.of_type(CONTAINER):
        (attachment,) = container.inputs["networksAdvanced"]
        assert attachment["name"] == "cdn-fleet"
        assert attachment["aliases"] == [container.inputs["name"]]
        assert ipaddress.ip_address(attachment["ipv4Address"]) in ipaddress.ip_network(
            "10.90.0.0/24"
        )


def test_every_host_has_the_topologys_fixed_address(local_run: FleetRun) -> None:
    """Addresses follow the topology (the lab uses the same ones): a block per region, a
    range per role; adding an edge moves no other host."""
    addresses = {
        c.inputs["name"]: c.inputs["networksAdvanced"][0]["ipv4Address"]
        for c in local_run.of_type(CONTAINER)
    }
    assert addresses["eu-edge-1"] == "10.90.0.16"
    assert addresses["eu-edge-2"] == "10.90.0.17"
    assert addresses["eu-shield-1"] == "10.90.0.32"
    assert addresses["eu-dns-1"] == "10.90.0.40"
    assert addresses["us-edge-1"] == "10.90.0.48"
    assert addresses["us-prometheus-1"] == "10.90.0.76"
    assert len(set(addresses.values())) == len(addresses)


def test_components_are_one_region_each_owning_its_hosts(local_run: FleetRun) -> None:
    regions = sorted(r.name for r in local_run.of_type("cdn:fleet:Region"))
    assert regions == ["eu", "us"]
    hosts = [h.name for h in local_run.of_type("cdn:fleet:Host")]
    assert sorted(hosts) == sorted(c.inputs["name"] for c in local_run.of_type(CONTAINER))
    assert not [r for r in local_run.declared if r.typ.startswith("aws:")]


def test_inventory_reaches_containers_through_podman(local_run: FleetRun) -> None:
    hosts = local_run.outputs["inventory"]["hosts"]
    addresses = {
        c.inputs["name"]: c.state["networkDatas"][0]["ipAddress"]
        for c in local_run.of_type(CONTAINER)
    }
    assert set(hosts) == set(addresses)
    for name, host_vars in hosts.items():
        assert host_vars["ansible_connection"] == "cdnctl_podman"
        assert host_vars["ansible_host"] == name
        assert host_vars["cdn_public_address"] == addresses[name]
        assert host_vars["cdn_private_address"] == addresses[name]
        assert host_vars["cdn_role"] in ROLES


def test_per_role_image_overrides_the_provider_image() -> None:
    from fleet_harness import run_fleet

    config = stack_config("local")
    config["regions"][0]["roles"]["dns"]["image"] = "localhost/cdnctl-gdnsd:bookworm"
    run = run_fleet(config)
    images = {c.inputs["name"]: c.inputs["image"] for c in run.of_type(CONTAINER)}
    assert images["eu-dns-1"] == "localhost/cdnctl-gdnsd:bookworm"
    assert images["us-dns-1"] == "localhost/cdnctl-systemd:bookworm"
