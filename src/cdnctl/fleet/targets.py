"""Which nodes of an Ansible inventory the admin API commands talk to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdnctl.edge.admin_client import DEFAULT_ADMIN_PORT, Edge
from cdnctl.fleet.inventory_cache import cached_listing
from cdnctl.paths import project_root

EDGE_GROUPS = ("edge", "shield")


def ansible_tool(name: str) -> str:
    """An Ansible command: the one installed next to this Python (the venv), else PATH's."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else name


def connection_plugins() -> str:
    """ANSIBLE_CONNECTION_PLUGINS for an ad-hoc `ansible` run: the caller's, then the
    project's (cdnctl_podman, the lab's connection; playbooks in ansible/ find it alone)."""
    own = str(project_root() / "ansible" / "connection_plugins")
    return os.pathsep.join(filter(None, (os.environ.get("ANSIBLE_CONNECTION_PLUGINS"), own)))


def host_url(host: str, hostvars: Mapping[str, Any], port: object) -> str:
    """http://ADDRESS:PORT of an inventory host on the private network: its
    cdn_private_address, else ansible_host, else its name (IPv6 in brackets)."""
    address = str(hostvars.get("cdn_private_address") or hostvars.get("ansible_host") or host)
    return f"http://[{address}]:{port}" if ":" in address else f"http://{address}:{port}"


def inventory_json(inventory: Path) -> dict[str, Any]:
    """`ansible-inventory --list` of an inventory (any format ansible-inventory reads); a
    static inventory's is kept until one of its files changes (inventory_cache.py)."""
    tool = ansible_tool("ansible-inventory")

    def list_inventory() -> dict[str, Any]:
        proc = subprocess.run(
            [tool, "-i", str(inventory), "--list"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ValueError(f"ansible-inventory failed for {inventory}: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    return cached_listing(inventory, tool, list_inventory)


def group_hosts(listing: Mapping[str, Any], group: str) -> list[str]:
    """The hosts of `group` and of its child groups in an `ansible-inventory --list`
    document (Ansible's `groups[group]`), sorted."""
    found: set[str] = set()
    pending, seen = [group], set()
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            found.update(listing.get(name, {}).get("hosts", []))
            pending.extend(listing.get(name, {}).get("children", []))
    return sorted(found)


def edges_from_inventory(inventory: Path, groups: Sequence[str] = EDGE_GROUPS) -> list[Edge]:
    """Edges and shields of an Ansible inventory (any format ansible-inventory reads)."""
    data = inventory_json(inventory)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    names: list[str] = []
    for group in groups:
        for host in data.get(group, {}).get("hosts", []):
            if host not in names:
                names.append(host)
    edges = []
    for host in names:
        hv = hostvars.get(host, {})
        port = hv.get("cdn_admin_api_port", DEFAULT_ADMIN_PORT)
        edges.append(Edge(name=host, url=host_url(host, hv, port)))
    if not edges:
        raise ValueError(f"{inventory}: no hosts in groups {', '.join(groups)}")
    return edges
