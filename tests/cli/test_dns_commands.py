"""`cdnctl dns render` and `cdnctl dns records` on the sample tenants and a small inventory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    directory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories" / "lab" / "group_vars", directory / "group_vars")
    hosts = {
        "edge": {
            "eu-edge-1": {"cdn_region": "eu", "cdn_public_address": "192.0.2.10"},
            "us-edge-1": {"cdn_region": "us", "cdn_public_address": "198.51.100.10"},
        },
        "dns": {"eu-dns-1": {"cdn_region": "eu", "cdn_public_address": "192.0.2.53"}},
    }
    # The platform variables Pulumi exports: the regions' client networks.
    regions = {
        "eu": {"client_networks": ["192.0.2.0/24"]},
        "us": {"client_networks": ["198.51.100.0/24"]},
    }
    (directory / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "vars": {"cdn_domain": "cdn.test", "cdn_regions": regions},
                    "children": {g: {"hosts": h} for g, h in hosts.items()},
                }
            }
        )
    )
    return directory


def test_render_writes_a_tree_gdnsd_accepts(inventory: Path, tmp_path: Path) -> None:
    out = tmp_path / "gdnsd"
    args = ["dns", "render", "--inventory", str(inventory), "--tenants", str(ROOT / "tenants")]
    result = runner.invoke(app, [*args, "--out", str(out), "--listen", "127.0.0.1:5353"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "zones").iterdir()) == [
        "cdn.customer-a.test",
        "cdn.customer-b.test",
        "cdn.customer-c.test",
        "cdn.test",
    ]
    assert "customer-b 30 CNAME edge.cdn.test." in (out / "zones" / "cdn.test").read_text()
    first = {p.name: p.read_bytes() for p in (out / "zones").iterdir()}
    assert (
        runner.invoke(app, [*args, "--out", str(out), "--listen", "127.0.0.1:5353"]).exit_code == 0
    )
    assert {p.name: p.read_bytes() for p in (out / "zones").iterdir()} == first
    checked = subprocess.run(
        ["gdnsd", "-c", str(out), "checkconf"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_render_names_a_region_without_edges(inventory: Path, tmp_path: Path) -> None:
    settings = inventory / "group_vars" / "all" / "dns.yml"
    data = yaml.safe_load(settings.read_text())
    data["cdn_dns"]["regions"]["ap"] = {"nets": ["203.0.113.0/24"]}
    settings.write_text(yaml.safe_dump(data))
    args = ["dns", "render", "--inventory", str(inventory), "--tenants", str(ROOT / "tenants")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "['ap'] have no edge in the inventory" in result.output


def test_records_are_one_cname_per_domain(inventory: Path) -> None:
    args = ["dns", "records", "customer-c", "--inventory", str(inventory)]
    result = runner.invoke(app, [*args, "--tenants", str(ROOT / "tenants")])
    assert result.exit_code == 0, result.output
    assert "cdn.customer-c.test." in result.output
    assert "*.cdn.customer-c.test." in result.output
    assert result.output.count("customer-c.cdn.test.") == 2


def test_records_of_an_unknown_tenant(inventory: Path) -> None:
    args = ["dns", "records", "nobody", "--inventory", str(inventory)]
    result = runner.invoke(app, [*args, "--tenants", str(ROOT / "tenants")])
    assert result.exit_code == 2
    assert "no such tenant file" in result.output
