"""The lab skips a converge only when nothing site.yml reads changed (cdnctl.lab.converged)."""

from __future__ import annotations

from pathlib import Path

from cdnctl.lab.converged import INPUTS, NOT_READ, fingerprint, forget, record, recorded
from tests.conftest import ROOT


def tree(tmp_path: Path) -> Path:
    (tmp_path / "roles" / "edge" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "edge" / "tasks" / "main.yml").write_text("---\n")
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "a.yaml").write_text("id: a\n")
    return tmp_path


def test_same_inputs_same_fingerprint_and_any_change_shows(tmp_path: Path) -> None:
    root = tree(tmp_path)
    containers, secrets = {"eu-edge-1": "id1"}, {"CDNCTL_ADMIN_TOKEN": "t"}
    first = fingerprint(root, containers, secrets)
    assert fingerprint(root, containers, secrets) == first
    (root / "tenants" / "a.yaml").write_text("id: a\nname: A\n")
    edited = fingerprint(root, containers, secrets)
    assert edited != first
    (root / "tenants" / "b.yaml").write_text("id: b\n")
    assert fingerprint(root, containers, secrets) != edited
    assert fingerprint(root, {"eu-edge-1": "id2"}, secrets) != fingerprint(
        root, containers, secrets
    )
    assert fingerprint(root, containers, {"CDNCTL_ADMIN_TOKEN": "u"}) != fingerprint(
        root, containers, secrets
    )
    # Python caches are not inputs.
    before = fingerprint(root, containers, secrets)
    (root / "roles" / "edge" / "__pycache__").mkdir()
    (root / "roles" / "edge" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert fingerprint(root, containers, secrets) == before
    # Nor is the compile cache the playbooks write under ansible/ (a dot-directory).
    (root / "ansible" / ".cdnctl-cache").mkdir(parents=True)
    (root / "ansible" / ".cdnctl-cache" / "compile-cache.index").write_bytes(b"x")
    assert fingerprint(root, containers, secrets) == before
    # Nor are the playbooks site.yml does not import; site.yml itself is.
    (root / "ansible" / "rolling.yml").write_text("---\n")
    assert fingerprint(root, containers, secrets) == before
    (root / "ansible" / "site.yml").write_text("---\n")
    assert fingerprint(root, containers, secrets) != before


def test_the_playbooks_left_out_are_not_imported_by_site_yml() -> None:
    site = (ROOT / "ansible" / "site.yml").read_text(encoding="utf-8")
    for playbook in NOT_READ:
        assert (ROOT / playbook).is_file(), playbook
        assert Path(playbook).name not in site, playbook


def test_the_inputs_are_what_site_yml_reads() -> None:
    for name in INPUTS:
        assert (ROOT / name).exists(), name
    assert "roles" in INPUTS and "tenants" in INPUTS and "inventories/lab" in INPUTS


def test_record_and_forget(tmp_path: Path) -> None:
    marker = tmp_path / "converged"
    assert recorded(marker) is None
    record(marker, "sha256:abc")
    assert recorded(marker) == "sha256:abc"
    forget(marker)
    assert recorded(marker) is None
