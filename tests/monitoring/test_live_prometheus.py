"""Every rule of a region's Prometheus, run by a real Prometheus scraping a real edge.

The stack (tests/monitoring/conftest.py): one edge serving four tenants, scraped by a real
Prometheus with the rendered config, rules and file_sd targets.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cdnctl.fleet import dashboards, monitoring
from tests.monitoring.conftest import REGION, PrometheusServer

pytestmark = pytest.mark.integration


def test_the_edge_is_scraped_with_the_region_s_labels(stack: PrometheusServer) -> None:
    [edge] = stack.wait_for('up{job="cdn_edge"}')
    assert edge["metric"] | {"instance": ""} == {
        "__name__": "up",
        "job": "cdn_edge",
        "instance": "",
        "region": REGION,
        "role": "edge",
        "host": "lab-edge-1",
    }
    assert edge["value"][1] == "1"
    assert stack.wait_for('up{job="prometheus"} == 1')


def value(result: list[dict]) -> float:
    return float(result[0]["value"][1])


def test_recording_rules_give_the_tenants_figures(stack: PrometheusServer) -> None:
    def tenant_value(record: str, tenant_id: str) -> float:
        return value(stack.wait_for(f'{record}{{tenant="{tenant_id}", region="{REGION}"}}'))

    # shop: 5 requests, 2 MISS then 3 HIT.
    assert tenant_value("tenant_region:cdn_cache_hit:ratio_rate5m", "shop") == pytest.approx(0.6)
    assert tenant_value("tenant_region:cdn_requests_5xx:ratio_rate5m", "shop") == 0
    assert tenant_value("tenant_region:cdn_requests_5xx:ratio_rate5m", "broken") == 1
    assert tenant_value("tenant_region:cdn_response_bytes:rate5m", "shop") > 0
    assert tenant_value("tenant_region:cdn_origin_response_seconds:p95_rate5m", "shop") > 0
    assert tenant_value("tenant_region:cdn_origin_auth_failures:ratio_rate5m", "locked") == 1
    assert tenant_value("tenant_region:cdn_origin_errors:ratio_rate5m", "broken") == 1
    assert tenant_value("tenant_region:cdn_origin_auth_failures:ratio_rate5m", "shop") == 0
    # One URL purge a round; the first is the series' first sample, not an increase.
    purges = stack.wait_for(f'tenant_region_kind:cdn_purges:increase1h{{region="{REGION}"}} > 0')
    assert {(p["metric"]["tenant"], p["metric"]["kind"]) for p in purges} == {("shop", "url")}
    assert value(purges) >= 1
    # _unknown (the request for nobody.test) is not a tenant. Region rules are a group of
    # their own, evaluated up to an interval after the tenant rules: waited for.
    assert stack.wait_for("region:cdn_active_tenants:count == 4", timeout=10)


def test_alerts_see_the_failing_origins(stack: PrometheusServer) -> None:
    # Each alert becomes pending at the first evaluation after its recording rule has a
    # value: wait for each one (any pending alert alone raced the later ones).
    for alert, tenant_id in (
        ("CdnOriginAuthFailures", "locked"),
        ("CdnOriginUnreachable", "gone"),
        ("CdnOriginUnreachable", "broken"),
    ):
        stack.wait_for(f'ALERTS{{alertname="{alert}", tenant="{tenant_id}"}}')
    pending = stack.wait_for('ALERTS{alertstate="pending"}')
    by_alert = {(a["metric"]["alertname"], a["metric"].get("tenant")) for a in pending}
    assert ("CdnOriginAuthFailures", "locked") in by_alert
    assert ("CdnOriginUnreachable", "gone") in by_alert
    assert ("CdnOriginUnreachable", "broken") in by_alert
    assert not {t for name, t in by_alert if name == "CdnOriginAuthFailures"} - {"locked"}


def test_every_rule_expression_runs_without_error(stack: PrometheusServer) -> None:
    failed = {}
    for name, expr in monitoring.rule_expressions(monitoring.render_rules()).items():
        answer = stack.query(expr)
        if answer["status"] != "success":
            failed[name] = answer.get("error")
    assert not failed


def test_the_scrape_fails_without_the_admin_token(stack: PrometheusServer) -> None:
    [edge] = stack.wait_for('up{job="cdn_edge"}')
    url = f"http://{edge['metric']['instance']}/metrics"
    assert httpx.get(url).status_code == 401
    assert Path(stack.directory / "admin_token").stat().st_mode & 0o077 == 0


# What Grafana puts in place of its variables before it sends a query.
GRAFANA_VARIABLES = {"$tenant": "shop", "${datasource}": "", "$__rate_interval": "1m"}


def test_every_panel_query_runs_and_the_core_panels_have_data(stack: PrometheusServer) -> None:
    failed, empty = {}, []
    for name, board in dashboards.dashboards([REGION]).items():
        for title, expr in dashboards.panel_queries(board):
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            answer = stack.query(expr)
            if answer["status"] != "success":
                failed[f"{name}: {title}: {expr}"] = answer.get("error")
            elif not answer["data"]["result"] and (
                title.removesuffix(", all regions") in dashboards.CORE_PANELS
            ):
                empty.append(f"{name}: {title}: {expr}")
    assert not failed
    assert not empty, "core panels without data"
