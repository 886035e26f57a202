"""The multi-region lab on podman: inventory, containers (ansible/lab.yml), site.yml, the
certificates (ansible/certificates.yml against the lab's pebble), then the smoke test.

Thin on purpose: the containers and their configuration are the project's playbooks; this
module writes the inventory from the topology, supplies the environment they need, times
each step and runs cdnctl.lab.smoke at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdnctl.bundle.compile import compile_paths
from cdnctl.fleet.certificates import load_settings
from cdnctl.lab.converged import fingerprint, forget, record, recorded
from cdnctl.lab.smoke import (
    LabView,
    SampleTenant,
    SmokeReport,
    lab_view,
    pebble_root,
    sample_tenants,
    smoke,
)
from cdnctl.lab.topology import (
    FLEET_INVENTORY,
    LAB_INVENTORY,
    default_stack_file,
    fleet_hosts,
    lab_only_hosts,
    load_lab_topology,
    write_inventory,
)
from cdnctl.paths import project_root, write_private
from cdnctl.tenants.policy import load_policy

# Secrets site.yml reads from the environment; the lab makes throwaway ones when unset and
# keeps them (0600) so that a re-run converges with the same values.
# The fingerprint of the last successful converge (cdnctl.lab.converged).
CONVERGED_FILE = "converged"
LAB_SECRETS = ("CDNCTL_ADMIN_TOKEN", "CUSTOMER_B_ORIGIN_PASSWORD", "CUSTOMER_A_PURGE_TOKEN")


class LabError(RuntimeError):
    """A lab step failed (the message names the step and the log to read)."""


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float


@dataclass
class LabUp:
    """What `lab up` did: each step's time, the lab it checked, and the smoke test's result."""

    times: list[StepTime]
    view: LabView
    root_ca: Path  # the pebble issuing root clients trust (curl --cacert)
    token_file: Path  # where the throwaway admin token lives (unless it came from the env)
    smoke: SmokeReport
    tenants: list[SampleTenant]
    notes: list[str]


@dataclass(frozen=True)
class LabContainer:
    name: str
    role: str
    address: str
    state: str
    id: str = ""


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


def lab_environment() -> dict[str, str]:
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
            env=lab_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise LabError(
            f"{step} failed after {elapsed:.0f} s (whole log: {log}):\n{failed_task(log)}"
        )
    echo(f"{step}: done in {elapsed:.0f} s")
    return StepTime(step, elapsed)


FAILURE_MARKS = ("fatal:", "failed:", "UNREACHABLE!", "ERROR!")


def failed_task(log: Path, most: int = 25) -> str:
    """The part of an ansible-playbook log that says what failed: the header of the task
    that failed and the lines after it (at most `most`), or the log's last lines."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    failure = next(
        (i for i, line in enumerate(lines) if any(m in line for m in FAILURE_MARKS)), None
    )
    if failure is None:
        return "\n".join(lines[-most:])
    header = next(
        (i for i in range(failure, -1, -1) if lines[i].startswith(("TASK [", "RUNNING HANDLER ["))),
        failure,
    )
    return "\n".join(line for line in lines[header : failure + most] if line.strip())


def _remove_stale(containers: list[LabContainer], echo: Callable[[str], None]) -> None:
    """Remove the containers podman records as running whose process is gone (a machine
    restored from a snapshot of a running lab, a killed conmon): `podman_container` would
    take them as started and the converge would fail on them."""
    stale = [c.name for c in containers if c.state == STALE]
    if not stale:
        return
    echo(f"containers: {', '.join(stale)}: recorded as running, process gone: removing them")
    try:
        _podman("rm", "--force", *stale)
    except LabError as exc:
        raise LabError(
            f"{exc} (remove them by hand: podman rm --force {' '.join(stale)})"
        ) from None


def _podman(*args: str) -> str:
    """podman's output, with the lab's environment; LabError when it fails."""
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=lab_environment(), check=False
    )
    if done.returncode != 0:
        raise LabError(f"podman {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def lab_up(
    stack_file: Path | None, echo: Callable[[str], None], *, force_converge: bool = False
) -> LabUp:
    """Write the inventory, create the containers, converge site.yml (skipped when nothing it
    reads changed since the last converge, see cdnctl.lab.converged), issue the
    certificates, smoke-test every region; LabError names the step that failed."""
    start = time.monotonic()
    fleet = load_lab_topology(stack_file or default_stack_file())
    written = write_inventory(fleet, inventory_dir())
    times = [StepTime("inventory", time.monotonic() - start)]
    echo(f"inventory: wrote {', '.join(str(p) for p in written)}")
    wanted = {h.name for h in fleet_hosts(fleet)} | {h.name for h in lab_only_hosts(fleet)}
    found = lab_status()
    _remove_stale(found, echo)
    running = {c.name: c.id for c in found if c.state == "running"}
    if wanted <= set(running):
        echo(f"containers: all {len(wanted)} running")
    else:
        times.append(_playbook("containers", "lab.yml", echo=echo))
        running = {c.name: c.id for c in lab_status() if c.state == "running"}
    env = lab_environment()
    inputs = fingerprint(
        project_root(),
        {name: running.get(name, "") for name in sorted(wanted)},
        {name: env[name] for name in LAB_SECRETS},
    )
    marker = secrets_dir() / CONVERGED_FILE
    if not force_converge and recorded(marker) == inputs:
        echo(
            "converge: skipped: nothing site.yml reads changed since the last converge "
            "(--converge forces one)"
        )
        times.append(StepTime("converge (unchanged)", 0.0))
    else:
        forget(marker)
        times.append(_playbook("converge", "site.yml", echo=echo))
        record(marker, inputs)
    times.append(_playbook("certificates", "certificates.yml", echo=echo))
    view = lab_view(inventory_dir())
    started = time.monotonic()
    root_ca = _write_root(view)
    tenants = _sample_tenants()
    report = smoke(view, tenants, root_ca.read_text(encoding="utf-8"), echo=echo)
    times.append(StepTime("smoke", time.monotonic() - started))
    if not report.ok:
        failed = "; ".join(f"{c.region}: {c.what}: {c.detail}" for c in report.failed)
        raise LabError(f"smoke test failed ({len(report.failed)} check(s)): {failed}")
    echo(f"smoke: {len(report.checks)} checks passed in {report.seconds:.0f} s")
    notes = [
        f"Grafana {host} ({region}): its provisioning is written and checked; no server runs "
        "(grafana_package_available: false in inventories/lab: Grafana's package cannot be "
        "installed on this machine)"
        for region, host, role, _ in view.hosts
        if role == "grafana"
    ]
    token = secrets_dir() / "cdnctl_admin_token"
    return LabUp(times, view, root_ca, token, report, tenants, notes)


def lab_status() -> list[LabContainer]:
    """The lab's containers (label cdnctl.lab=1) as podman sees them."""
    ids = _podman("ps", "-aq", "--filter", "label=cdnctl.lab=1").split()
    if not ids:
        return []
    rows = []
    for c in json.loads(_podman("inspect", *ids)):
        networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
        rows.append(
            LabContainer(
                c["Name"],
                (c.get("Config", {}).get("Labels") or {}).get("cdnctl.lab.role", ""),
                ", ".join(n.get("IPAddress", "") for n in networks.values()),
                _state(c.get("State") or {}, c.get("Id", "")),
                c.get("Id", ""),
            )
        )
    return sorted(rows, key=lambda r: r.name)


STALE = "stale"


def _state(state: dict, container_id: str) -> str:
    """podman's status, or STALE when podman records the container running but its init
    process is gone (podman's state outlived the processes; the pid may be another
    process's by now: a container's init is in a cgroup named after the container)."""
    status = state.get("Status", "")
    if status != "running":
        return status
    try:
        cgroup = Path(f"/proc/{int(state.get('Pid') or 0)}/cgroup").read_text(encoding="ascii")
    except OSError:
        return STALE
    return status if container_id and container_id in cgroup else STALE


def _write_root(view: LabView) -> Path:
    """Fetch the lab pebble's issuing root (new at each pebble start) for clients."""
    if view.acme is None:
        raise LabError("the lab inventory has no ACME host (group acme)")
    listener = secrets_dir() / "pebble-listener.pem"
    try:
        root = pebble_root(view.acme, listener)
    except Exception as exc:
        raise LabError(f"smoke: cannot read pebble's issuing root: {exc}") from None
    path = secrets_dir() / "pebble-root.pem"
    path.write_text(root, encoding="utf-8")
    return path


def _sample_tenants() -> list[SampleTenant]:
    tenants = project_root() / "tenants"
    result = compile_paths([tenants], load_policy(inventory_dir()))
    if not result.ok or result.bundle is None:
        raise LabError(f"{tenants}: the tenants do not compile: `cdnctl validate` says why")
    return sample_tenants(json.loads(result.bundle)["tenants"])


def lab_down(echo: Callable[[str], None]) -> list[StepTime]:
    """Remove the lab's containers and network (labelled cdnctl.lab), the inventory, and the
    certificates issued by the lab's pebble."""
    directory = inventory_dir()
    if not (directory / LAB_INVENTORY).exists():
        fleet = load_lab_topology(default_stack_file())
        write_inventory(fleet, directory)  # the network's name comes from the topology
    times = [_playbook("remove", "lab.yml", "-e", "lab_state=absent", echo=echo)]
    for name in (FLEET_INVENTORY, LAB_INVENTORY):
        (directory / name).unlink(missing_ok=True)
    # The certificates chain to the removed pebble's root (new at each start): forget them.
    store = load_settings(directory).store
    if store.is_dir():
        shutil.rmtree(store)
        echo(f"remove: forgot the lab certificates in {store}")
    (secrets_dir() / "pebble-root.pem").unlink(missing_ok=True)
    forget(secrets_dir() / CONVERGED_FILE)
    return times
