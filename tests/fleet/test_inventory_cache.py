"""The kept `ansible-inventory --list` of a static inventory: used again while nothing it
reads changed, listed again as soon as something did, never kept for a dynamic one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cdnctl.fleet import inventory_cache
from cdnctl.fleet.targets import ansible_tool, inventory_json

TOOL = ansible_tool("ansible-inventory")


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_inventory(directory: Path, region: str = "eu") -> Path:
    (directory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (directory / "group_vars" / "all" / "cdn.yml").write_text(
        yaml.safe_dump({"cdn_domain": "cdn.test"})
    )
    hosts = {"all": {"children": {"dns": {"hosts": {"eu-dns-1": {"cdn_region": region}}}}}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return directory


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        return {"calls": self.calls}


def test_a_static_inventory_is_listed_once_until_a_file_changes(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    lister = Counting()
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 1}
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 1}
    # Same size, same second: the contents decide, not the times.
    cdn = inventory / "group_vars" / "all" / "cdn.yml"
    cdn.write_text(cdn.read_text().replace("cdn.test", "cdn.tset"))
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "eu-dns-1.yml").write_text("cdn_private_address: 10.0.0.5\n")
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 3}
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 3}


def test_ansible_settings_are_part_of_the_fingerprint(tmp_path: Path, monkeypatch) -> None:
    # Another ANSIBLE_* setting lists again; and a process with other settings (the lab's
    # CLI run from a bench) does not evict the first one's listing.
    inventory = write_inventory(tmp_path / "inv")
    lister = Counting()
    inventory_cache.cached_listing(inventory, TOOL, lister)
    monkeypatch.setenv("ANSIBLE_INVENTORY_ENABLED", "yaml")
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}
    for _ in range(2):
        monkeypatch.delenv("ANSIBLE_INVENTORY_ENABLED")
        assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 1}
        monkeypatch.setenv("ANSIBLE_INVENTORY_ENABLED", "yaml")
        assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}


def test_dynamic_inventories_are_never_kept(tmp_path: Path) -> None:
    plugin = write_inventory(tmp_path / "plugin")
    (plugin / "aws_ec2.yml").write_text("plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n")
    script = write_inventory(tmp_path / "script")
    (script / "hosts.sh").write_text("#!/bin/sh\necho '{}'\n")
    (script / "hosts.sh").chmod(0o755)
    for inventory in (plugin, script):
        assert inventory_cache.fingerprint(inventory, TOOL) is None
        lister = Counting()
        inventory_cache.cached_listing(inventory, TOOL, lister)
        assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}


def test_an_inventory_with_a_vault_file_is_never_kept(tmp_path: Path) -> None:
    # Its listing holds the decrypted values: they never go to the cache on disk.
    inventory = write_inventory(tmp_path / "inv")
    (inventory / "group_vars" / "all" / "vault.yml").write_text(
        "$ANSIBLE_VAULT;1.1;AES256\n6162636465660a\n"
    )
    assert inventory_cache.fingerprint(inventory, TOOL) is None
    lister = Counting()
    inventory_cache.cached_listing(inventory, TOOL, lister)
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_a_file_inventory_counts_its_neighbouring_vars(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv") / "hosts.yml"
    lister = Counting()
    inventory_cache.cached_listing(inventory, TOOL, lister)
    (inventory.parent / "group_vars" / "all" / "more.yml").write_text("x: 1\n")
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 2}


def test_the_real_listing_follows_an_edit_and_is_private(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    assert inventory_json(inventory)["_meta"]["hostvars"]["eu-dns-1"]["cdn_region"] == "eu"
    write_inventory(inventory, region="us")
    assert inventory_json(inventory)["_meta"]["hostvars"]["eu-dns-1"]["cdn_region"] == "us"
    kept = list(inventory_cache.cache_dir().glob("*.json"))
    assert len(kept) == 2  # one per fingerprint: before and after the edit
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in kept)


def test_only_the_newest_listings_are_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inventory_cache, "KEEP", 3)
    for number in range(5):
        inventory = write_inventory(tmp_path / f"inv{number}")
        inventory_cache.cached_listing(inventory, TOOL, Counting())
    assert len(list(inventory_cache.cache_dir().glob("*.json"))) == 3


def test_an_unreadable_cache_lists_again(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    inventory_cache.cached_listing(inventory, TOOL, Counting())
    for kept in inventory_cache.cache_dir().glob("*.json"):
        kept.write_text("{not json")
    lister = Counting()
    assert inventory_cache.cached_listing(inventory, TOOL, lister) == {"calls": 1}
