"""The DNS hosts of an inventory as commands reach them: one command on every host of group
dns in parallel through Ansible (its connection settings, become and forks), the results
per host, and which hosts have drain agents (dns_agents.py). Light on imports (no
rendering, no tenant model): `cdnctl drain` starts with this and drain.py only.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdnctl.edge.admin_client import TOKEN_ENV
from cdnctl.fleet import dns_agents
from cdnctl.fleet.targets import ansible_tool, connection_plugins, group_hosts, inventory_json

# Names in gdnsd's config that the rendering (dns.py) and the drains (drain.py) share.
RESOURCE = "edge"  # the geoip resource: zones refer to it as geoip!edge
SERVICE_TYPE = "edge_health"


class DnsError(ValueError):
    """Settings, inventory or tenants that cannot make a valid GeoDNS setup, or DNS hosts
    that could not be driven."""


# Rendered by Ansible for each DNS host (double quotes: commands run in a single-quoted sh -c).
ADMIN_STATE = '{{ geodns_state_dir | default("/var/lib/gdnsd") }}/admin_state'
CONFIG_DIR = '{{ geodns_config_dir | default("/etc/gdnsd") }}'
GDNSDCTL = f"gdnsdctl -c {CONFIG_DIR}"


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    stdout: str
    error: str = ""
    unreachable: bool = False  # Ansible could not reach the host (nothing ran there)
    via: str = "ansible"  # or "agent": the host's drain agent (dns_agents.py)


FORKS = 64  # Ansible starts min(forks, hosts) workers: every DNS host at once


class DnsHosts:
    """The `dns` hosts of an inventory, driven with Ansible (its connection settings, become
    and forks) so that the same command works on cloud hosts, podman containers and the
    tests' local hosts. `raw` commands: no Python module round trip, about 0.6-1 s per call
    for all hosts in parallel (`FORKS`: one Ansible worker per host). Each host's
    `geodns_state_dir`/`geodns_config_dir` (the geodns role's variables) say where its gdnsd
    lives. Drains take the hosts' drain agents instead where they answer (`agents()`,
    drain.py): one HTTP call per host.
    """

    def __init__(self, inventory: Path, pattern: str = "dns", token: str | None = None) -> None:
        self.inventory = inventory
        self.pattern = pattern
        # The admin token the drain agents check ($CDNCTL_ADMIN_TOKEN by default); "" : none,
        # every edit goes through Ansible.
        self.token = os.environ.get(TOKEN_ENV, "").strip() if token is None else token

    @functools.cached_property
    def listing(self) -> dict[str, Any]:
        """The inventory's `ansible-inventory --list` (read once: about 0.5 s)."""
        return inventory_json(self.inventory)

    def names(self) -> list[str] | None:
        """The hosts the pattern selects: group dns's, or the names `only()` lists; None for
        a pattern only Ansible can evaluate."""
        if self.pattern == "dns":
            return group_hosts(self.listing, "dns")
        names = self.pattern.split(":")
        known = self.listing.get("_meta", {}).get("hostvars", {})
        return names if all(name in known for name in names) else None

    def agents(self) -> tuple[list[dns_agents.Agent], dict[str, tuple[str, str]]] | None:
        """The drain agents of these hosts and the inventory's edges (dns_agents.find), or
        None: edit through Ansible."""
        if not self.token:
            return None
        names = self.names()
        return None if names is None else dns_agents.find(self.listing, names, self.token)

    def run(self, command: str) -> list[HostResult]:
        proc = subprocess.run(
            [
                ansible_tool("ansible"),
                self.pattern,
                "-i",
                str(self.inventory),
                "--forks",
                str(FORKS),
                "-m",
                "ansible.builtin.raw",
                "-a",
                # raw runs no shell over connections without one (podman exec): ask for it
                f"/bin/sh -c {shlex.quote(command)}",
            ],
            capture_output=True,
            text=True,
            check=False,
            env={
                **os.environ,
                "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                # Not the caller's extra callbacks (profile_tasks...): they print into the
                # JSON. Only the stdout one (an empty list is an error; stdout ones load once).
                "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.json",
                "ANSIBLE_CONNECTION_PLUGINS": connection_plugins(),
            },
        )
        try:
            tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
        except (json.JSONDecodeError, KeyError, IndexError):
            raise DnsError(
                f"ansible {self.pattern} -i {self.inventory} failed (rc {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[:500]}"
            ) from None
        results = []
        for host, result in sorted(tasks[0]["hosts"].items()):
            ok = result.get("rc") == 0 and not result.get("unreachable")
            error = "" if ok else (result.get("stderr") or result.get("msg") or "failed").strip()
            unreachable = bool(result.get("unreachable"))
            results.append(HostResult(host, ok, result.get("stdout", ""), error, unreachable))
        return results

    def only(self, hosts: Iterable[str]) -> DnsHosts:
        """The same inventory, only `hosts`."""
        selected = DnsHosts(self.inventory, ":".join(sorted(hosts)), self.token)
        if "listing" in self.__dict__:  # read already: not again
            selected.listing = self.listing
        return selected

    def states(self) -> list[HostResult]:
        """`gdnsdctl states` of every DNS host (JSON in stdout)."""
        return self.run(f"{GDNSDCTL} states")

    def acme_dns_01(self, challenges: Mapping[str, str]) -> list[HostResult]:
        """Publish DNS-01 TXT payloads (name -> payload) on every DNS host, for gdnsd's
        ACME window (`acme_challenge_ttl`, default 10 min); for the platform wildcard."""
        args = " ".join(
            f"{shlex.quote(name)} {shlex.quote(value)}" for name, value in challenges.items()
        )
        return self.run(f"{GDNSDCTL} acme-dns-01 {args}")
