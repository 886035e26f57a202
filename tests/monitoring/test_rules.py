"""Prometheus config, rules and targets rendered from templates/prometheus/, run by promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cdnctl.fleet import monitoring

HERE = Path(__file__).resolve().parent
RUNBOOKS = HERE.parents[1] / "docs" / "runbooks.md"

HOSTVARS = {
    "eu-edge-1": {"cdn_region": "eu", "cdn_role": "edge", "cdn_private_address": "10.0.0.1"},
    "eu-edge-2": {
        "cdn_region": "eu",
        "cdn_role": "edge",
        "cdn_private_address": "10.0.0.2",
        "cdn_admin_api_port": 9200,
    },
    "eu-shield-1": {"cdn_region": "eu", "cdn_role": "shield", "cdn_private_address": "fd00::3"},
    "eu-dns-1": {"cdn_region": "eu", "cdn_role": "dns", "cdn_private_address": "10.0.0.4"},
    "eu-prometheus-1": {
        "cdn_region": "eu",
        "cdn_role": "prometheus",
        "cdn_private_address": "10.0.0.5",
    },
    "us-edge-1": {"cdn_region": "us", "cdn_role": "edge", "cdn_private_address": "10.1.0.1"},
}
GROUPS = {
    "edge": ["eu-edge-2", "eu-edge-1", "us-edge-1"],
    "shield": ["eu-shield-1"],
    "dns": ["eu-dns-1"],
    "prometheus": ["eu-prometheus-1"],
    "grafana": [],
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """A region's whole Prometheus configuration, as the role lays it out, under tmp_path."""
    (tmp_path / "rules.yml").write_text(monitoring.render_rules())
    (tmp_path / "token").write_text("t\n")
    monitoring.write_targets(tmp_path / "file_sd", HOSTVARS, GROUPS, "eu")
    settings = monitoring.PrometheusSettings(
        region="eu",
        rules_file=str(tmp_path / "rules.yml"),
        file_sd_dir=str(tmp_path / "file_sd"),
        admin_token_file=str(tmp_path / "token"),
    )
    (tmp_path / "prometheus.yml").write_text(monitoring.render_config(settings))
    return tmp_path


def test_config_and_rules_pass_promtool_check(rendered: Path) -> None:
    checked = promtool("check", "config", str(rendered / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = promtool("check", "rules", str(rendered / "rules.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    assert config["global"]["external_labels"] == {"region": "eu"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"cdn_edge", "node", "gdnsd", "prometheus"}
    assert jobs["cdn_edge"]["authorization"]["credentials_file"] == str(rendered / "token")
    assert all("authorization" not in jobs[name] for name in ("node", "gdnsd", "prometheus"))


def test_promtool_unit_tests_of_the_alerts_pass(rendered: Path) -> None:
    shutil.copy(HERE / "alerts_test.yml", rendered)
    result = promtool("test", "rules", "alerts_test.yml", cwd=rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    rules = monitoring.render_rules()
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    missing = {
        name: {True, False} - cases.get(name, set()) for name in monitoring.alert_names(rules)
    }
    assert not {name: kinds for name, kinds in missing.items() if kinds}, "(True: firing case)"
    assert set(cases) == set(monitoring.alert_names(rules)), "cases of alerts that do not exist"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("#")
    }
    for group in yaml.safe_load(monitoring.render_rules())["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule
                continue
            annotations = rule["annotations"]
            assert annotations["summary"] and annotations["description"], rule["alert"]
            url = annotations["runbook_url"]
            assert url.startswith("docs/runbooks.md#"), url
            assert url.split("#")[1] in anchors, f"{rule['alert']}: no section {url} in {RUNBOOKS}"
            assert rule["labels"]["severity"] in {"page", "warning"}


def test_thresholds_reach_the_rules() -> None:
    rules = monitoring.render_rules(
        monitoring.AlertSettings(min_healthy_edges=5, runbook_url="https://wiki.test/run")
    )
    expressions = monitoring.rule_expressions(rules)
    assert expressions["CdnRegionFewHealthyEdges"].endswith("< 5")
    assert "https://wiki.test/run#cdnedgedown" in rules


def test_targets_come_from_the_region_s_hosts_in_the_inventory(rendered: Path) -> None:
    def targets(job: str) -> list[tuple[str, dict[str, str]]]:
        groups = json.loads((rendered / "file_sd" / f"{job}.json").read_text())
        return [(group["targets"][0], group["labels"]) for group in groups]

    assert targets("cdn_edge") == [
        ("10.0.0.1:9145", {"region": "eu", "role": "edge", "host": "eu-edge-1"}),
        ("10.0.0.2:9200", {"region": "eu", "role": "edge", "host": "eu-edge-2"}),
        ("[fd00::3]:9145", {"region": "eu", "role": "shield", "host": "eu-shield-1"}),
    ]
    assert [target for target, _ in targets("node")] == [
        "10.0.0.4:9100",
        "10.0.0.1:9100",
        "10.0.0.2:9100",
        "10.0.0.5:9100",
        "[fd00::3]:9100",
    ]
    assert targets("gdnsd") == [
        ("10.0.0.4:9153", {"region": "eu", "role": "dns", "host": "eu-dns-1"}),
    ]
    assert targets("prometheus") == [
        ("10.0.0.5:9090", {"region": "eu", "role": "prometheus", "host": "eu-prometheus-1"}),
    ]
