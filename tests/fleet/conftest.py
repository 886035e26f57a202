"""A real gdnsd on 127.0.0.1 (Debian's gdnsd 3.8) for the DNS tests, stopped at teardown."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from cdnctl.edge.runner import free_port
from cdnctl.fleet import dns as fleet_dns
from cdnctl.fleet import dns_agents
from cdnctl.fleet.targets import inventory_json

GDNSD = shutil.which("gdnsd") or "/usr/sbin/gdnsd"


def query(port: int, name: str, subnet: str | None = None, rtype: str = "A") -> list[str]:
    """The answer data of one UDP query, with an EDNS Client Subnet option when given."""
    options = []
    if subnet is not None:
        address, _, prefix = subnet.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    message = dns.message.make_query(name, rtype, use_edns=0, options=options)
    answer = dns.query.udp(message, "127.0.0.1", port=port, timeout=2)
    return sorted(rdata.to_text() for rrset in answer.answer for rdata in rrset)


def wait_for(predicate, timeout: float, step: float = 0.05) -> float:
    """Seconds until predicate() held; fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


class Gdnsd:
    """One gdnsd instance: CFG/config + CFG/zones, run/ and state/ in a private directory.

    gdnsd does not drop privileges itself: started as root it runs as the gdnsd user
    (setpriv), which needs a directory it can read (pytest's tmp_path is root-only).
    """

    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"cdnctl-{name}-"))
        self.root.chmod(0o755)
        self.config_dir = self.root / "etc"
        self.run_dir = self.root / "run"
        self.state_dir = self.root / "state"
        for directory in (self.config_dir, self.run_dir, self.state_dir):
            directory.mkdir(mode=0o755)
        self.port = free_port()
        self.log = self.root / "gdnsd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None  # start_agent()

    @property
    def server(self) -> fleet_dns.ServerOptions:
        return fleet_dns.ServerOptions(
            listen=(f"127.0.0.1:{self.port}",),
            run_dir=str(self.run_dir),
            state_dir=str(self.state_dir),
        )

    def host_vars(self) -> dict[str, object]:
        """An inventory's DNS host for this gdnsd: this machine (Ansible's local connection),
        region eu, the geodns role's directories pointing at this server's."""
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "cdn_region": "eu",
            "cdn_public_address": "127.0.0.1",
            "geodns_config_dir": str(self.config_dir),
            "geodns_state_dir": str(self.state_dir),
        }

    def configure_as_role(self, inventory: Path) -> tuple[fleet_dns.DnsSettings, fleet_dns.Fleet]:
        """The config and zones the geodns role would give this server for `inventory`,
        before any tenant; the inventory's DNS settings and fleet."""
        listing = inventory_json(inventory)
        settings = fleet_dns.load_settings(inventory, fleet_dns.platform_vars(listing))
        fleet = fleet_dns.fleet_from_inventory(listing)
        fleet_dns.write_tree(
            self.config_dir,
            fleet_dns.render_config(settings, fleet, self.server),
            fleet_dns.render_zones(settings, fleet, []),
        )
        return settings, fleet

    def _as_gdnsd(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        user = pwd.getpwnam("gdnsd")
        for directory in (self.run_dir, self.state_dir):
            os.chown(directory, user.pw_uid, user.pw_gid)
        return ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups"]

    def checkconf(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GDNSD, "-c", str(self.config_dir), "checkconf"],
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> Gdnsd:
        command = [*self._as_gdnsd(), GDNSD, "-c", str(self.config_dir), "-D", "start"]
        with self.log.open("wb") as log:
            # The geodns role's default (geodns_immediate_states): no admin_state timers.
            env = {**os.environ, "GDNSD_TESTSUITE_NODELAY": "1"}
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for(self._ready, timeout=15, step=0.1)
        except BaseException:
            print(self.log.read_text(errors="replace"))
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"gdnsd exited: {self.log.read_text(errors='replace')[-3000:]}")
        return self.ctl("status").returncode == 0

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gdnsdctl", "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def start_agent(self, token: str, port: int | None = None) -> int:
        """The geodns role's drain agent for this server: admin_state.py serve under the
        system python3 (the module must need nothing else), as gdnsd's user, on 127.0.0.1;
        its port."""
        self.stop_agent()
        port = port or free_port()
        token_file = self.root / "admin-token"
        token_file.write_text(f"{token}\n")
        state = self.state_dir / "admin_state"
        command = [
            *self._as_gdnsd(),
            *dns_agents.serve_command(
                f"127.0.0.1:{port}", str(token_file), str(state), str(self.config_dir)
            ),
        ]
        with (self.root / "agent.log").open("ab") as log:
            self.agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._agent_ready(port), timeout=10, step=0.05)
        return port

    def _agent_ready(self, port: int) -> bool:
        if self.agent is not None and self.agent.poll() is not None:
            pytest.fail(f"agent exited: {(self.root / 'agent.log').read_text(errors='replace')}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_agent(self) -> None:
        agent, self.agent = self.agent, None
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(timeout=10)

    def stop(self) -> None:
        self.stop_agent()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def make_gdnsd() -> Iterator[callable]:
    started: list[Gdnsd] = []

    def make(name: str = "gdnsd") -> Gdnsd:
        server = Gdnsd(name)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
