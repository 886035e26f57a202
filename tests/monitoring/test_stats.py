"""`cdnctl stats` against the real Prometheus of tests/monitoring/conftest.py (a real edge)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.runner import free_port
from cdnctl.fleet import stats
from tests.monitoring.conftest import REGION, PrometheusServer

pytestmark = pytest.mark.integration


def test_tenants_and_regions_sorted_by_traffic(stack: PrometheusServer) -> None:
    stack.wait_for("region:cdn_active_tenants:count == 4", timeout=10)
    snapshot = stats.collect([stack.url], history_minutes=5, step=15)
    assert snapshot.errors == {}
    assert snapshot.tenants[0].tenant == "shop"  # 5 requests a round, the others 1
    assert {t.tenant for t in snapshot.tenants} == {"shop", "locked", "broken", "gone"}
    shop = snapshot.tenants[0]
    assert shop.region == REGION
    assert shop.hit_ratio == pytest.approx(0.6)
    assert shop.error_ratio_5xx == 0 and shop.bytes_per_second > 0
    assert shop.origin_p95_seconds > 0
    assert shop.history and max(shop.history) > 0
    [region] = snapshot.regions
    assert region.region == REGION and region.active_tenants == 4


def test_filters_by_tenant_and_region(stack: PrometheusServer) -> None:
    only = stats.collect([stack.url], tenant="broken")
    assert [(t.tenant, t.error_ratio_5xx) for t in only.tenants] == [("broken", 1.0)]
    assert stats.collect([stack.url], region="elsewhere").tenants == []


def test_cli_json_and_table(stack: PrometheusServer) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "--prometheus", stack.url, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert {t["tenant"] for t in document["tenants"]} >= {"shop", "locked"}
    assert set(document["tenants"][0]) == {
        "tenant", "region", "requests_per_second", "hit_ratio", "bytes_per_second",
        "error_ratio_5xx", "origin_p95_seconds", "history",
    }  # fmt: skip
    table = runner.invoke(app, ["stats", "--prometheus", stack.url, "--tenant", "shop"])
    assert table.exit_code == 0, table.output
    assert "Tenants by traffic" in table.output and "shop" in table.output
    assert "60.0%" in table.output and "locked" not in table.output


def test_an_unreachable_prometheus_is_named(stack: PrometheusServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    snapshot = stats.collect([dead, stack.url], timeout=2)
    assert dead in snapshot.errors and snapshot.tenants
    result = CliRunner().invoke(app, ["stats", "--prometheus", dead])
    assert result.exit_code == 1 and dead in result.output


def test_prometheus_servers_come_from_the_inventory(tmp_path: Path) -> None:
    hosts = {
        "eu-prometheus-1": {"cdn_private_address": "10.0.0.5"},
        "us-prometheus-1": {"cdn_private_address": "fd00::5", "cdn_prometheus_port": 9099},
    }
    (tmp_path / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {"prometheus": {"hosts": hosts}}}})
    )
    assert stats.prometheus_urls(tmp_path / "hosts.yml") == [
        "http://10.0.0.5:9090",
        "http://[fd00::5]:9099",
    ]


def test_sparkline_scales_to_the_largest_value() -> None:
    assert stats.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert stats.sparkline([0, 0]) == "▁▁"
