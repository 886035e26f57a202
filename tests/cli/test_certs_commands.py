"""`cdnctl certs`: status and settings errors offline; renew against pebble and an edge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.runner import free_port
from tests.conftest import tenant_doc
from tests.edge.conftest import ADMIN_TOKEN
from tests.fleet import pebble as pebble_fixtures

make_pebble = pebble_fixtures.make_pebble


def lab(tmp_path: Path, settings: str) -> tuple[Path, Path]:
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    doc = tenant_doc("shop", domains=["shop.test", "*.img.shop.test"])
    (tenants / "shop.yaml").write_text(yaml.safe_dump(doc))
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "certificates.yml").write_text(settings)
    return tenants, inventory


def test_status_shows_what_the_next_renew_does(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tenants, inventory = lab(tmp_path, f"cdn_acme:\n  state_dir: {state}\n")
    result = CliRunner().invoke(
        app,
        [
            "certs",
            "status",
            "--inventory",
            str(inventory),
            "--tenants",
            str(tenants),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["tenant"] == "shop"
    assert row["names"] == ["shop.test"]  # the wildcard needs DNS-01
    assert (row["action"], row["reason"]) == ("issue", "no certificate yet")


def test_bad_settings_name_the_file_and_field(tmp_path: Path) -> None:
    tenants, inventory = lab(tmp_path, "cdn_acme:\n  renew_remaining_fraction: 2\n")
    result = CliRunner().invoke(
        app, ["certs", "renew", "--inventory", str(inventory), "--tenants", str(tenants)]
    )
    assert result.exit_code == 2
    assert "certificates.yml: cdn_acme.renew_remaining_fraction" in result.stderr


@pytest.mark.integration
def test_renew_issues_once_and_reports_json(tmp_path: Path, make_node, make_pebble, monkeypatch):
    node = make_node("eu", https_listen=f"127.0.0.1:{free_port()}")
    pebble = make_pebble(int(node.address.rpartition(":")[2]))
    tenants, inventory = lab(
        tmp_path,
        f"cdn_acme:\n  directory_url: {pebble.directory_url}\n  ca_bundle: {pebble.listener_ca}\n"
        f"  state_dir: {tmp_path / 'state'}\n",
    )
    monkeypatch.setenv("CDNCTL_ADMIN_TOKEN", ADMIN_TOKEN)
    command = [
        "certs",
        "renew",
        "--inventory",
        str(inventory),
        "--tenants",
        str(tenants),
        "--edge",
        node.edge.admin_url,
        "--format",
        "json",
    ]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["issued"] == ["shop"]
    [edge] = report["edges"]
    assert (edge["ok"], edge["set"], edge["removed"]) == (True, ["shop"], [])
    second = json.loads(CliRunner().invoke(app, command).stdout)
    assert second["issued"] == [] and second["edges"][0]["set"] == []
    assert second["tenants"][0]["action"] == "keep"
