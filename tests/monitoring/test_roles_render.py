"""roles/prometheus and roles/grafana, configure steps run by ansible-playbook on this machine.

The roles render the same templates as cdnctl, with their `validate:` checks (promtool, JSON)
run for real; what they write must be what cdnctl renders for the same inventory, and a
second run must change nothing. Grafana is marked unavailable, as on every machine here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdnctl.fleet import dashboards, monitoring

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "role-test-admin-token"
HOSTS = {
    "eu-prometheus-1": {"cdn_role": "prometheus", "cdn_region": "eu", "ip": "127.0.0.1"},
    "eu-grafana-1": {"cdn_role": "grafana", "cdn_region": "eu", "ip": "127.0.0.2"},
    "eu-edge-1": {"cdn_role": "edge", "cdn_region": "eu", "ip": "10.0.0.1"},
    "eu-shield-1": {"cdn_role": "shield", "cdn_region": "eu", "ip": "10.0.0.3"},
    "us-edge-1": {"cdn_role": "edge", "cdn_region": "us", "ip": "10.1.0.1"},
    "us-prometheus-1": {"cdn_role": "prometheus", "cdn_region": "us", "ip": "10.1.0.5"},
}


def inventory() -> tuple[dict, dict]:
    hostvars = {
        name: {
            "cdn_role": h["cdn_role"],
            "cdn_region": h["cdn_region"],
            "ansible_host": h["ip"],
            "cdn_public_address": h["ip"],
            "cdn_private_address": h["ip"],
        }
        for name, h in HOSTS.items()
    }
    groups: dict[str, list[str]] = {g: [] for g in ("edge", "shield", "dns", "prometheus")}
    groups["grafana"] = []
    for name, h in HOSTS.items():
        groups[h["cdn_role"]].append(name)
        groups.setdefault(f"region_{h['cdn_region']}", []).append(name)
    return hostvars, groups


def without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("roles")
    hostvars, groups = inventory()
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    (tmp / "inventory.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        name: {**hv, **(local if name.startswith("eu-") else {})}
                        for name, hv in hostvars.items()
                    },
                    "children": {g: {"hosts": dict.fromkeys(m)} for g, m in groups.items()},
                }
            }
        )
    )
    (tmp / "play.yml").write_text(
        yaml.safe_dump(
            [
                {"hosts": "prometheus", "gather_facts": False, "roles": ["prometheus"]},
                {"hosts": "grafana", "gather_facts": False, "roles": ["grafana"]},
            ]
        )
    )
    extra = {
        "cdn_admin_token": TOKEN,
        "prometheus_config_dir": str(tmp / "prometheus"),
        "prometheus_storage_dir": str(tmp / "prometheus-data"),
        "prometheus_service_state": "stopped",
        "grafana_package_available": False,
        "grafana_provisioning_dir": str(tmp / "grafana" / "provisioning"),
        "grafana_dashboards_dir": str(tmp / "grafana" / "dashboards"),
    }
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
    }
    outputs = []
    for _ in range(2):  # the second run must change nothing
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("ansible-playbook")),
                "-i", str(tmp / "inventory.yml"),
                "--limit", "eu-prometheus-1,eu-grafana-1",
                "--tags", "prometheus_configure,grafana_configure",
                "-e", f"@{tmp / 'extra.json'}",
                str(tmp / "play.yml"),
            ],
            capture_output=True, text=True, env=env, cwd=tmp,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        outputs.append(run.stdout)
    return tmp, outputs


def test_prometheus_role_writes_what_cdnctl_renders(applied: tuple[Path, list[str]]) -> None:
    tmp, _ = applied
    hostvars, groups = inventory()
    config_dir = tmp / "prometheus"
    for job in monitoring.jobs():
        written = json.loads((config_dir / "file_sd" / f"{job['job']}.json").read_text())
        expected = json.loads(monitoring.render_targets(job, hostvars, groups, "eu"))
        assert written == expected, job["job"]
    edges = json.loads((config_dir / "file_sd" / "cdn_edge.json").read_text())
    assert [g["labels"]["host"] for g in edges] == ["eu-edge-1", "eu-shield-1"]
    rules = (config_dir / "rules" / "cdnctl.yml").read_text()
    assert without_comments(rules) == without_comments(monitoring.render_rules())
    settings = monitoring.PrometheusSettings(
        region="eu",
        rules_file=str(config_dir / "rules" / "cdnctl.yml"),
        file_sd_dir=str(config_dir / "file_sd"),
        admin_token_file=str(config_dir / "cdn_admin_token"),
    )
    config = (config_dir / "prometheus.yml").read_text()
    assert without_comments(config) == without_comments(monitoring.render_config(settings))
    token = config_dir / "cdn_admin_token"
    assert token.read_text() == TOKEN + "\n" and token.stat().st_mode & 0o007 == 0


def test_grafana_role_provisions_without_the_package(applied: tuple[Path, list[str]]) -> None:
    tmp, outputs = applied
    assert "are SKIPPED on eu-grafana-1" in outputs[0]
    hostvars, groups = inventory()
    provisioning = tmp / "grafana" / "provisioning"
    written = yaml.safe_load((provisioning / "datasources" / "cdnctl.yaml").read_text())
    assert written == yaml.safe_load(dashboards.render_datasources(hostvars, groups, "15s"))
    providers = yaml.safe_load((provisioning / "dashboards" / "cdnctl.yaml").read_text())
    assert providers["providers"][0]["options"]["path"] == str(tmp / "grafana" / "dashboards")
    for name, board in dashboards.dashboards(["eu", "us"]).items():
        assert (tmp / "grafana" / "dashboards" / name).read_text() == dashboards.render(board)


def test_a_second_run_changes_nothing(applied: tuple[Path, list[str]]) -> None:
    _, outputs = applied
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", outputs[1], re.M)
    assert recap and all(changed == "0" for _, changed in recap), outputs[1][-2000:]
