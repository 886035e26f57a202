"""What the multi-region lab's smoke test and summary read from the generated inventory
(no containers): regions with their client subnet, DNS hosts, edges, shields, Prometheus;
the ACME host the lab's cdn_acme points at; one concrete name per sample tenant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cdnctl.bundle.compile import compile_paths
from cdnctl.fleet.certificates import load_settings
from cdnctl.lab.smoke import lab_view, sample_tenants
from cdnctl.lab.topology import default_stack_file, load_lab_topology, write_inventory
from cdnctl.tenants.policy import load_policy
from tests.conftest import ROOT

LAB = ROOT / "inventories" / "lab"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("lab-inventory")
    shutil.copytree(LAB / "group_vars", directory / "group_vars")
    write_inventory(load_lab_topology(default_stack_file()), directory)
    return directory


def test_the_view_has_every_region_of_the_local_stack(inventory: Path) -> None:
    view = lab_view(inventory)
    fleet = load_lab_topology(default_stack_file())
    assert [r.name for r in view.regions] == [r.name for r in fleet.regions]
    for region, spec in zip(view.regions, fleet.regions, strict=True):
        assert region.client_network == next(n for n in spec.client_networks if ":" not in n)
        assert len(region.edges) == spec.roles.edge.count
        assert len(region.dns) == spec.roles.dns.count
        assert len(region.shields) == spec.roles.shield.count
        assert len(region.prometheus) == spec.roles.prometheus.count
    assert view.domain == fleet.domain
    assert view.origin == "lab-origin-1"


def test_the_labs_acme_settings_point_at_its_pebble_host(inventory: Path) -> None:
    view = lab_view(inventory)
    settings = load_settings(LAB)
    assert urlsplit(settings.directory_url).hostname == view.acme
    assert settings.platform_wildcard
    assert settings.ca_bundle is not None and settings.ca_bundle.name == "pebble-listener.pem"


def test_each_sample_tenant_has_a_concrete_name() -> None:
    result = compile_paths([ROOT / "tenants"], load_policy(LAB))
    assert result.ok and result.bundle is not None
    tenants = {t.id: t for t in sample_tenants(json.loads(result.bundle)["tenants"])}
    assert tenants["customer-a"].name == "cdn.customer-a.test" and tenants["customer-a"].shielded
    assert tenants["customer-b"].base_path == "/assets"
    # customer-c serves *.cdn.customer-c.test too: the smoke test asks its concrete name.
    assert tenants["customer-c"].name == "cdn.customer-c.test"
    assert not tenants["customer-c"].shielded
