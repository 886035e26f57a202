"""The Grafana dashboards and datasources: structure (Grafana can load them) and wiring."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.fleet import dashboards

REGIONS = ["us", "eu"]
HOSTVARS = {
    "eu-prometheus-1": {"cdn_region": "eu", "cdn_private_address": "10.0.0.5"},
    "eu-prometheus-2": {"cdn_region": "eu", "cdn_private_address": "10.0.0.6"},
    "us-prometheus-1": {"cdn_region": "us", "cdn_private_address": "fd00::5"},
}
GROUPS = {"prometheus": ["us-prometheus-1", "eu-prometheus-2", "eu-prometheus-1"]}


def test_datasources_one_per_region() -> None:
    provisioning = yaml.safe_load(dashboards.render_datasources(HOSTVARS, GROUPS, "15s"))
    assert provisioning["apiVersion"] == 1
    assert [(d["uid"], d["url"], d["isDefault"]) for d in provisioning["datasources"]] == [
        ("cdn-prometheus-eu", "http://10.0.0.5:9090", True),
        ("cdn-prometheus-us", "http://[fd00::5]:9090", False),
    ]
    assert all(d["jsonData"]["timeInterval"] == "15s" for d in provisioning["datasources"])


def test_dashboards_have_grafana_s_structure() -> None:
    provisioned = {
        d["uid"]
        for d in yaml.safe_load(dashboards.render_datasources(HOSTVARS, GROUPS, "15s"))[
            "datasources"
        ]
    }
    for name, board in dashboards.dashboards(REGIONS).items():
        typed = Dashboard.from_json(board)
        assert typed.uid == board["uid"] and typed.title, name
        assert (typed.schema_version or 0) >= 36, name  # what Grafana 10+ loads unmigrated
        panels = list(dashboards.panels(board))
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        variables = {v["name"] for v in board.get("templating", {}).get("list", [])}
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (name, panel["title"])
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{name}: {panel['title']!r} overlaps another panel"
            cells |= area
            for used in re.findall(r"\$\{?(\w+)", panel["title"]):
                assert used in variables, (name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                uid = target["datasource"]["uid"]
                assert uid in provisioned | {"${datasource}"}, (name, panel["title"], uid)
                for used in re.findall(r"\$(?!__)\{?(\w+)", target["expr"]):
                    assert used in variables, (name, panel["title"], target["expr"])
            if panel["datasource"]["uid"] == "-- Mixed --":
                assert {t["datasource"]["uid"] for t in panel["targets"]} == provisioned


def test_every_core_panel_is_on_the_dashboards() -> None:
    titles = {
        panel["title"].removesuffix(", all regions")
        for board in dashboards.dashboards(REGIONS).values()
        for panel in dashboards.panels(board)
    }
    assert titles >= dashboards.CORE_PANELS


def test_cli_writes_and_checks_the_dashboards(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["dashboards", "--region", "eu", "--region", "us", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cdn-overview.json", "cdn-tenant.json"]
    assert runner.invoke(app, [*args, "--check"]).exit_code == 0
    (tmp_path / "cdn-tenant.json").write_text("{}")
    stale = runner.invoke(app, [*args, "--check"])
    assert stale.exit_code == 1 and "cdn-tenant.json" in stale.output
