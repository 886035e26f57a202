"""One multi-region lab (`cdnctl lab up`) shared by every test that asks for `fleet_lab`.

The lab is the product's main job on one machine and costs minutes to bring up, so it is
brought up once per pytest session, whatever the number of modules using it (the fleet
lab's own checks, GitOps sync, rolling edges). A lab that was already running is used as
it is and left running; one this session brought up is taken down at the end, and the
teardown fails if anything labelled cdnctl.lab is left behind.

Tests that use `fleet_lab` are marked `lab`: `make unit` runs `-m "not lab"`, `make
lab-test` runs `-m lab`, and `make test` (CI) runs both.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cdnctl.lab.fleet import LabUp, lab_down, lab_status, lab_up
from tests.conftest import ROOT

ENV = {"CONTAINERS_CONF": str(ROOT / "molecule" / "containers.conf")}


def podman(*args: str) -> str:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **ENV},
    ).stdout


def leftovers() -> list[str]:
    """Containers and networks labelled cdnctl.lab, and the generated inventory."""
    left = [f"container {c}" for c in podman("ps", "-aq", "--filter", "label=cdnctl.lab=1").split()]
    networks = json.loads(podman("network", "ls", "--format", "json"))
    left += [f"network {n['name']}" for n in networks if (n.get("labels") or {}).get("cdnctl.lab")]
    if (ROOT / "inventories" / "lab" / "hosts.yml").exists():
        left.append("inventories/lab/hosts.yml")
    return left


@dataclass
class FleetLab:
    up: LabUp
    brought_up: bool  # this session started the lab (so it takes it down)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "fleet_lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fleet_lab() -> Iterator[FleetLab]:
    os.environ.setdefault("CONTAINERS_CONF", ENV["CONTAINERS_CONF"])
    brought_up = not lab_status()
    try:
        yield FleetLab(lab_up(None, echo=print), brought_up)
    finally:
        if brought_up:
            lab_down(echo=print)
    if brought_up:
        assert lab_status() == []
        left = leftovers()
        assert not left, f"lab down left behind: {left}"
