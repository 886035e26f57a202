"""`cdnctl certs status` and the settings errors of `cdnctl certs` (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from tests.conftest import tenant_doc


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
