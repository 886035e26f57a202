"""ansible/tenants.yml against the converged nodes: removal, a failing canary, recovery.

Each test runs the rollout playbook with a tenants directory of its own (a temporary copy of
tenants/, changed) and ends by rolling the repository's tenants out again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
TOKEN = {"Authorization": f"Bearer {os.environ['CDNCTL_ADMIN_TOKEN']}"}
CANARY = "10.88.77.20"  # the shield: the first shield is the canary
EDGES = ("10.88.77.31", "10.88.77.32")
NODES = (CANARY, *EDGES)
# Sorts first, so a rollout without a plan (tenants outside git) smoke-tests it.
BROKEN = """\
id: a-broken-origin
name: Broken origin
domains:
  - cdn.broken.test
origin:
  url: http://origin.customer-a.test:18099
"""


def rollout(tenants: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            shutil.which("ansible-playbook") or "ansible-playbook",
            "--inventory",
            str(INVENTORY),
            "--extra-vars",
            f"cdn_tenants_dir={tenants}",
            str(REPO / "ansible" / "tenants.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )


def running(address: str) -> dict[str, object]:
    response = httpx.get(f"http://{address}:9145/config", headers=TOKEN, timeout=10)
    response.raise_for_status()
    return response.json()


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "tenants"
    shutil.copytree(REPO / "tenants", copy)
    yield copy
    restored = rollout(REPO / "tenants")
    assert restored.returncode == 0, restored.stdout[-3000:]


def test_removing_a_tenant_file_removes_the_tenant(tenants: Path) -> None:
    (tenants / "customer-c.yaml").unlink()
    result = rollout(tenants)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {running(address)["tenants"] for address in NODES} == {2}
    for address in EDGES:
        response = httpx.get(f"http://{address}/", headers={"Host": "cdn.customer-c.test"})
        assert response.status_code == 404
        assert response.json()["error"] == "unknown host"


def test_a_failing_canary_stops_the_rollout(tenants: Path) -> None:
    before = {address: running(address)["version"] for address in NODES}
    (tenants / "a-broken-origin.yaml").write_text(BROKEN, encoding="utf-8")
    result = rollout(tenants)
    assert result.returncode != 0, "the rollout went on past a failing smoke test"
    assert "Smoke-test a changed tenant through the canary" in result.stdout
    assert running(CANARY)["version"] != before[CANARY]
    assert {address: running(address)["version"] for address in EDGES} == {
        address: before[address] for address in EDGES
    }, "an edge got the bundle the canary failed with"


def test_a_second_rollout_changes_nothing() -> None:
    result = rollout(REPO / "tenants")
    assert result.returncode == 0, result.stdout[-3000:]
    recap = [line for line in result.stdout.splitlines() if "changed=" in line]
    assert recap
    assert all("changed=0" in line for line in recap), recap
