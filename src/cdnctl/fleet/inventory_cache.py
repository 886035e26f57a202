"""`ansible-inventory --list` of a static inventory, kept until something it reads changes.

Every command that reads the inventory (drain, purge, plan --inventory, status...) paid
0.45-0.9 s for `ansible-inventory` (importing Ansible, its plugins, parsing), more than a
drain through the DNS hosts' agents takes. A static inventory (YAML/INI files, group_vars,
host_vars) gives the same listing as long as those files, the Ansible installed and its
configuration are the same: the listing is kept under a fingerprint of all of them (their
contents, not their times) and used again while the fingerprint matches.

Never cached: an inventory with a dynamic part (an executable script, a YAML file naming a
`plugin:`), whose listing changes without any file changing, and one with a vault-encrypted
file, whose listing would hold the decrypted values. Inline `!vault` strings stay encrypted
in a listing. It is written 0600 in the user's cache (`$XDG_CACHE_HOME/cdnctl/inventory`,
else ~/.cache/cdnctl/inventory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cdnctl.paths import write_private

PLUGIN = re.compile(rb"^plugin\s*:", re.M)
VAULT = b"$ANSIBLE_VAULT;"
VARS_DIRS = ("group_vars", "host_vars")
# Where Ansible looks for its configuration (the first found wins), besides $ANSIBLE_CONFIG.
CONFIG_FILES = ("ansible.cfg", "~/.ansible.cfg", "/etc/ansible/ansible.cfg")
KEEP = 64  # listings kept (the newest)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "cdnctl" / "inventory"


def fingerprint(inventory: Path, tool: str) -> str | None:
    """A digest of what `tool` (ansible-inventory) reads for `inventory`, or None when the
    inventory has a dynamic part, a vault-encrypted file or cannot be read."""
    root = inventory.resolve()
    if root.is_dir():
        sources, extra = _files(root), []
    elif root.is_file():
        sources = [root]
        extra = [f for name in VARS_DIRS for f in _files(root.parent / name)]
    else:
        return None
    # The files Ansible reads as inventory sources (vars files are never run or plugins).
    inventories = {path for path in sources if not _in_vars_dir(path, root)}
    digest = hashlib.sha256()
    try:
        for path in sorted(sources + extra):
            data = path.read_bytes()
            if data.startswith(VAULT):
                return None  # decrypted in the listing: not kept on disk
            if path in inventories and (os.access(path, os.X_OK) or PLUGIN.search(data)):
                return None  # a script or an inventory plugin: dynamic
            digest.update(f"{path}\0{len(data)}\0".encode())
            digest.update(data)
        for config in (os.environ.get("ANSIBLE_CONFIG"), *CONFIG_FILES):
            if config and (found := Path(config).expanduser()).is_file():
                digest.update(b"config\0" + str(found.resolve()).encode() + found.read_bytes())
        tool_path = Path(tool)
        stat = tool_path.stat() if tool_path.is_file() else None
        digest.update(f"tool\0{tool}\0{stat.st_mtime_ns if stat else ''}".encode())
    except OSError:
        return None
    for name, value in sorted(os.environ.items()):
        if name.startswith("ANSIBLE_"):
            digest.update(f"env\0{name}={value}\0".encode())
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [Path(top) / name for top, _, names in os.walk(directory) for name in names]


def _in_vars_dir(path: Path, root: Path) -> bool:
    return bool(set(path.relative_to(root).parts[:-1]) & set(VARS_DIRS))


def cached_listing(
    inventory: Path, tool: str, list_inventory: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The listing of `inventory`: the kept one while its fingerprint holds, else
    `list_inventory()` (kept for next time when the inventory is static)."""
    key = fingerprint(inventory, tool)
    if key is None:
        return list_inventory()
    # One file per fingerprint (the inventory's paths are part of it): processes with other
    # ANSIBLE_* settings on the same inventory (a bench and the CLI it runs) do not evict
    # each other's listing.
    path = cache_dir() / f"{key[:32]}.json"
    for kept in _read(path):
        if kept.get("fingerprint") == key and isinstance(kept.get("listing"), dict):
            os.utime(path)  # used: pruned last
            return kept["listing"]
    listing = list_inventory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps({"fingerprint": key, "listing": listing}))
        _prune(path.parent)
    except OSError:
        pass  # a read-only home: no cache, the same listing
    return listing


def _prune(directory: Path) -> None:
    """Keep the KEEP listings used last (tests and labs make inventories by the dozen)."""
    kept = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in kept[KEEP:]:
        stale.unlink(missing_ok=True)


def _read(path: Path) -> Iterator[dict[str, Any]]:
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(kept, dict):
        yield kept
