"""The multi-region lab on podman: inventory, containers (ansible/lab.yml), then site.yml.

Thin on purpose: the containers and their configuration are the project's playbooks; this
module writes the inventory from the topology, supplies the environment they need and times
each step.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdnctl.lab.topology import (
    FLEET_INVENTORY,
    LAB_INVENTORY,
    default_stack_file,
    load_lab_topology,
    write_inventory,
)
from cdnctl.paths import project_root, write_private

# Secrets site.yml reads from the environment; the lab makes throwaway ones when unset and
# keeps them (0600) so that a re-run converges with the same values.
LAB_SECRETS = ("CDNCTL_ADMIN_TOKEN", "CUSTOMER_B_ORIGIN_PASSWORD", "CUSTOMER_A_PURGE_TOKEN")


class LabError(RuntimeError):
    """A lab step failed (the message names the step and the log to read)."""


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float


def inventory_dir() -> Path:
    return project_root() / "inventories" / "lab"


def secrets_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cdnctl" / "lab"


def _lab_secret(name: str) -> str:
    path = secrets_dir() / name.lower()
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(24)
    write_private(path, value + "\n")
    return value


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(project_root() / "molecule" / "containers.conf"))
    env["ANSIBLE_CONFIG"] = str(project_root() / "ansible" / "ansible.cfg")
    for name in LAB_SECRETS:
        if not env.get(name):
            env[name] = _lab_secret(name)
    return env


def _ansible_playbook() -> str:
    sibling = Path(sys.executable).with_name("ansible-playbook")
    found = str(sibling) if sibling.exists() else shutil.which("ansible-playbook")
    if not found:
        raise LabError("ansible-playbook not found: run `make setup` (it installs ansible)")
    return found


def _playbook(step: str, playbook: str, *extra: str, echo: Callable[[str], None]) -> StepTime:
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"cdnctl-lab-{playbook.removesuffix('.yml')}.log"
    echo(f"{step}: ansible-playbook {playbook} {' '.join(extra)} (log: {log})")
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            [_ansible_playbook(), playbook, "-i", str(inventory_dir()), *extra],
            cwd=project_root() / "ansible",
            env=_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise LabError(f"{step} failed after {elapsed:.0f} s: read {log} (the failed task is last)")
    echo(f"{step}: done in {elapsed:.0f} s")
    return StepTime(step, elapsed)


def lab_up(stack_file: Path | None, echo: Callable[[str], None]) -> list[StepTime]:
    """Write the inventory, create the containers, converge site.yml; the time of each step."""
    start = time.monotonic()
    fleet = load_lab_topology(stack_file or default_stack_file())
    written = write_inventory(fleet, inventory_dir())
    times = [StepTime("inventory", time.monotonic() - start)]
    echo(f"inventory: wrote {', '.join(str(p) for p in written)}")
    times.append(_playbook("containers", "lab.yml", echo=echo))
    times.append(_playbook("converge", "site.yml", echo=echo))
    return times


def lab_down(echo: Callable[[str], None]) -> list[StepTime]:
    """Remove the lab's containers and network (labelled cdnctl.lab) and the inventory."""
    directory = inventory_dir()
    if not (directory / LAB_INVENTORY).exists():
        fleet = load_lab_topology(default_stack_file())
        write_inventory(fleet, directory)  # the network's name comes from the topology
    times = [_playbook("remove", "lab.yml", "-e", "lab_state=absent", echo=echo)]
    for name in (FLEET_INVENTORY, LAB_INVENTORY):
        (directory / name).unlink(missing_ok=True)
    return times
