"""Whether the lab's converge can be skipped: a fingerprint of everything `site.yml` reads.

`site.yml` on 13 containers takes minutes even when it changes nothing (each task is an
Ansible round trip per host). The lab records, after each successful converge, the SHA-256
of its inputs: the playbooks, roles, templates, tenants, the lab inventory and topology,
cdnctl's own sources (roles ship some of them), the secrets it was given and the ids of the
containers it converged. A `cdnctl lab up` whose inputs have that fingerprint skips the
converge (`--converge` forces it); any edit, a new secret or a recreated container runs it.
What it cannot see: a change made by hand inside a container (run `--converge` then).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

INPUTS = (
    "ansible",
    "roles",
    "templates",
    "tenants",
    "inventories/lab",
    "pulumi/Pulumi.local.yaml",
    "src/cdnctl",
)
# Not inputs: Python caches and dot-directories (cdnctl's compile cache, which the
# tenants and certificates playbooks write under ansible/, Ansible's own .ansible/).
IGNORED_PARTS = {"__pycache__"}
# Playbooks under ansible/ that site.yml does not import: editing them needs no converge.
NOT_READ = {"ansible/lab.yml", "ansible/certificates.yml", "ansible/rolling.yml"}


def _files(root: Path) -> Iterable[Path]:
    for name in INPUTS:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                parts = file.relative_to(root).parts
                hidden = any(part.startswith(".") for part in parts)
                read = "/".join(parts) not in NOT_READ
                if file.is_file() and read and not hidden and not IGNORED_PARTS & set(parts):
                    yield file


def fingerprint(root: Path, containers: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """SHA-256 over the inputs' paths and bytes, the container ids and the secrets."""
    digest = hashlib.sha256()
    for file in _files(root):
        digest.update(f"{file.relative_to(root)}\0".encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    for name, container_id in sorted(containers.items()):
        digest.update(f"container {name} {container_id}\0".encode())
    for name, value in sorted(secrets.items()):
        digest.update(f"secret {name} ".encode() + hashlib.sha256(value.encode()).digest())
    return "sha256:" + digest.hexdigest()


def recorded(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def record(path: Path, value: str) -> None:
    path.write_text(value + "\n", encoding="utf-8")


def forget(path: Path) -> None:
    path.unlink(missing_ok=True)
