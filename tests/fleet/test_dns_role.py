"""The geodns role's configure step, run by ansible-playbook against this machine.

The role renders with cdnctl, checks the staged config with the new zone set, then puts
both in service; a second run changes nothing; changed zones are reloaded into a running
(real) gdnsd; a config gdnsd refuses stops the play and leaves what runs alone. Install and
service steps need systemd and are Molecule's (tags skip them here).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from cdnctl.edge.runner import free_port
from tests.conftest import ROOT, tenant_doc
from tests.fleet.conftest import Gdnsd, query, wait_for

AGENT_TOKEN = "role-test-agent-token-0123456789"
PLAYBOOK = """
- name: GeoDNS
  hosts: dns
  gather_facts: false
  roles:
    - role: geodns
"""


def dns_host_vars(base: Path, server: Gdnsd, **extra: object) -> dict[str, object]:
    """A DNS host of this machine: gdnsd's directories, the exporter's files and unit in
    `server`'s directory, no service started (systemd is Molecule's)."""
    return {
        **server.host_vars(),
        "geodns_run_dir": str(server.run_dir),
        "geodns_listen": [f"127.0.0.1:{server.port}"],
        "geodns_tenants_dir": str(base / "tenants"),
        "geodns_cdnctl": str(Path(sys.executable).with_name("cdnctl")),
        "geodns_service_state": "stopped",
        "geodns_exporter_program": str(server.root / "exporter" / "gdnsd_exporter.py"),
        "geodns_systemd_unit_dir": str(server.root),
        "geodns_exporter_service_state": "stopped",
        "geodns_admin_program": str(server.root / "agent" / "admin_state.py"),
        "geodns_admin_token_file": str(server.root / "agent" / "token"),
        "geodns_admin_token": AGENT_TOKEN,
        "geodns_admin_port": free_port(),
        "geodns_admin_service_state": "stopped",
        **extra,
    }


def make_inventory(
    base: Path, server: Gdnsd, settings: dict, dns_hosts: dict[str, dict] | None = None
) -> Path:
    inventory = base / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    (inventory / "group_vars" / "all" / "dns.yml").write_text(yaml.safe_dump({"cdn_dns": settings}))
    hosts = {
        "edge": {"eu-edge-1": {"cdn_region": "eu", "cdn_public_address": "127.0.0.11"}},
        "dns": dns_hosts or {"eu-dns-1": dns_host_vars(base, server)},
    }
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {g: {"hosts": h} for g, h in hosts.items()}}})
    )
    return inventory


def converge(base: Path, inventory: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    playbook = base / "site.yml"
    playbook.write_text(PLAYBOOK)
    args = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory)]
    for key, value in extra.items():
        args += ["-e", f"{key}={value}"]
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "PYTHONPATH": str(ROOT / "src"),  # the cdnctl of this checkout renders
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [*args, "--tags", "geodns_configure", str(playbook)],
        capture_output=True,
        text=True,
        check=False,
        cwd=base,
        env=env,
    )


def changed(result: subprocess.CompletedProcess[str]) -> int:
    return int(re.search(r"changed=(\d+)", result.stdout).group(1))


def test_configure_checks_installs_and_reloads(tmp_path: Path, make_gdnsd) -> None:
    server = make_gdnsd("role")
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    (tenants / "shop.yaml").write_text(yaml.safe_dump(tenant_doc("shop")))
    settings = {"domain": "cdn.test", "regions": {"eu": {"nets": ["192.0.2.0/24"]}}}
    inventory = make_inventory(tmp_path, server, settings)

    first = converge(tmp_path, inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    zones = server.config_dir / "zones"
    assert zones.is_symlink() and (zones / "cdn.test").is_file()
    assert server.checkconf().returncode == 0

    again = converge(tmp_path, inventory)
    assert again.returncode == 0, again.stdout
    assert changed(again) == 0, again.stdout

    server.start()
    assert query(server.port, "shop.cdn.test", rtype="CNAME") == ["edge.cdn.test."]
    agent_answers_with_its_unit(server)
    (tenants / "blog.yaml").write_text(yaml.safe_dump(tenant_doc("blog")))
    reloaded = converge(tmp_path, inventory, geodns_service_state="started")
    assert reloaded.returncode == 0, reloaded.stdout
    assert "Reload gdnsd's zones" in reloaded.stdout
    wait_for(lambda: query(server.port, "blog.cdn.test", rtype="CNAME") == ["edge.cdn.test."], 10)

    in_service = (server.config_dir / "config").read_text(), os.readlink(zones)
    settings["geoip2_db"] = str(tmp_path / "missing.mmdb")  # cdnctl accepts, gdnsd refuses
    make_inventory(tmp_path, server, settings)
    refused = converge(tmp_path, inventory, geodns_service_state="started")
    assert refused.returncode != 0
    assert "Check the staged config with the new zone set" in refused.stdout
    assert ((server.config_dir / "config").read_text(), os.readlink(zones)) == in_service
    assert query(server.port, "blog.cdn.test", rtype="CNAME") == ["edge.cdn.test."]


def test_each_dns_host_gets_its_own_config(tmp_path: Path, make_gdnsd) -> None:
    """Listen addresses come from each host: its own cdn_private_address and
    cdn_public_address by default, or its geodns_listen; its directories are its own."""
    eu, us = make_gdnsd("eu"), make_gdnsd("us")
    (tmp_path / "tenants").mkdir()
    settings = {"domain": "cdn.test", "regions": {"eu": {"nets": ["192.0.2.0/24"]}}}
    defaults = dns_host_vars(tmp_path, eu, cdn_private_address="127.0.0.21")
    defaults["cdn_public_address"] = "198.51.100.53"  # NAT'd to the host: IP_FREEBIND
    del defaults["geodns_listen"]
    hosts = {"eu-dns-1": defaults, "eu-dns-2": dns_host_vars(tmp_path, us)}
    inventory = make_inventory(tmp_path, eu, settings, hosts)

    result = converge(tmp_path, inventory)
    assert result.returncode == 0, result.stdout + result.stderr
    eu_config = (eu.config_dir / "config").read_text()
    us_config = (us.config_dir / "config").read_text()
    assert "listen => [ 127.0.0.21, 198.51.100.53 ]," in eu_config
    assert f"state_dir => {eu.state_dir}," in eu_config
    assert f"listen => [ 127.0.0.1:{us.port} ]," in us_config
    assert f"run_dir => {us.run_dir}," in us_config
    assert eu.checkconf().returncode == 0 and us.checkconf().returncode == 0
    # The exporter listens on the private address, on cdn_gdnsd_exporter_port's default.
    unit = (eu.root / "cdnctl-gdnsd-exporter.service").read_text()
    assert "--listen 127.0.0.21:9153" in unit
    # So does the drain agent (its port: the test's), writing this host's admin_state.
    agent = (eu.root / "cdnctl-dns-admin.service").read_text()
    assert f"--listen 127.0.0.21:{defaults['geodns_admin_port']}" in agent
    assert f"--state-file {eu.state_dir}/admin_state" in agent
    assert f"ReadWritePaths={eu.state_dir}" in agent


def agent_answers_with_its_unit(server: Gdnsd) -> None:
    """The drain agent the role installed, started as its unit's ExecStart says (as gdnsd's
    user, like systemd would), reads its token file and answers for this gdnsd."""
    unit = (server.root / "cdnctl-dns-admin.service").read_text()
    command = re.search(r"^ExecStart=(.*?[^\\])$", unit.replace("\\\n", " "), re.M).group(1)
    argv = shlex.split(command)
    assert argv[:3] == ["/usr/bin/python3", str(server.root / "agent" / "admin_state.py"), "serve"]
    token = server.root / "agent" / "token"
    assert token.read_text() == f"{AGENT_TOKEN}\n" and token.stat().st_mode & 0o777 == 0o640
    as_gdnsd = ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups"]
    agent = subprocess.Popen([*(as_gdnsd if os.geteuid() == 0 else []), *argv])
    url = f"http://{argv[argv.index('--listen') + 1]}"
    try:
        wait_for(lambda: _answers(f"{url}/health"), 10)
        edges = {"eu-edge-1": ["eu", "127.0.0.11"]}
        request = {"write": False, "resource": "edge", "service_type": "edge_health"}
        report = httpx.post(
            f"{url}/admin-state",
            json={"request": request, "edges": edges},
            headers={"Authorization": f"Bearer {AGENT_TOKEN}"},
        )
        assert report.status_code == 200, report.text
        assert report.json()["before"] == {"edges": [], "regions": []}
        assert report.json()["regions"] == {"eu": ["eu-edge-1"]}
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).json() == {"ok": True, "gdnsd": True}
    except (httpx.HTTPError, ValueError):
        return False
