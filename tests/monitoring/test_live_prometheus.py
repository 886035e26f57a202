"""Every rule of a region's Prometheus, run by a real Prometheus scraping a real edge.

One edge serves four tenants (a healthy origin, an origin rejecting the edge's credentials,
one answering 503, one gone after its object was cached: stale served); Prometheus, with the
rendered config, rules and file_sd targets, scrapes the edge's admin /metrics with the token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cdnctl.bundle.synthetic import bundle_bytes, make_bundle, tenant
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode, free_port
from cdnctl.fleet import dashboards, monitoring
from cdnctl.lab.sample_origin import SampleOrigin
from tests.monitoring.conftest import ADMIN_TOKEN, Node, PrometheusServer

pytestmark = pytest.mark.integration

REGION = "lab"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    tmp = tmp_path_factory.mktemp("monitoring")
    origins = {
        "shop": SampleOrigin("shop").start(),
        "locked": SampleOrigin("locked", basic_auth=("cdn", "right")).start(),
        "broken": SampleOrigin("broken").start(),
        "gone": SampleOrigin("gone").start(),
    }
    origins["broken"].behave("/", status=503, cache_control="no-store")
    origins["gone"].behave("/", cache_control="max-age=1")
    node = Node(
        EdgeNode(
            NodeSettings(
                prefix=tmp / "edge",
                listen=f"127.0.0.1:{free_port()}",
                admin_listen=f"127.0.0.1:{free_port()}",
                admin_token=ADMIN_TOKEN,
                workers=1,
            )
        ).start()
    )
    prometheus = PrometheusServer(
        tmp / "prometheus",
        REGION,
        hostvars={
            "lab-edge-1": {
                "cdn_region": REGION,
                "cdn_role": "edge",
                "cdn_private_address": "127.0.0.1",
                "cdn_admin_api_port": int(node.edge.settings.admin_listen.rsplit(":", 1)[1]),
            }
        },
        groups={"edge": ["lab-edge-1"]},
    )
    try:
        bundle = make_bundle(
            tenant("shop", ["shop.test"], origins["shop"].address),
            tenant("locked", ["locked.test"], origins["locked"].address, basic_auth=("cdn", "old")),
            tenant("broken", ["broken.test"], origins["broken"].address),
            tenant("gone", ["gone.test"], origins["gone"].address),
        )
        assert node.admin.post("/config", content=bundle_bytes(bundle)).status_code == 200
        prometheus.start()
        prometheus.wait_for('up{job="cdn_edge"} == 1')
        # A series' first sample is not an increase: every kind of request is sent in three
        # rounds a scrape apart, so rates are not zero. gone's object expires after round 1
        # and its origin stops: rounds 2 and 3 get the stale copy.
        for round_ in (1, 2, 3):
            for path in ("/a", "/a", "/a", "/b", "/b"):  # 2 MISS, 3 HIT
                assert node.get("shop.test", f"{path}{round_}").status_code == 200
            for host in ("locked.test", "broken.test", "nobody.test"):
                node.get(host, "/x")
            stale = node.get("gone.test", "/s").headers["X-Cache-Status"]
            assert stale == ("MISS" if round_ == 1 else "STALE")
            if round_ == 1:
                time.sleep(2.1)  # max-age=1 (nginx counts whole seconds): /s is stale now
                origins["gone"].stop()
            elif round_ == 2:
                time.sleep(2.1)  # the workers' flush (every second), then a scrape
        prometheus.wait_for('tenant_region:cdn_stale_responses:rate5m{tenant="gone"} > 0')
        yield prometheus
    finally:
        prometheus.stop()
        node.close()
        for origin in origins.values():
            origin.stop()


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
    # _unknown (the request for nobody.test) is not a tenant. Region rules are a group of
    # their own, evaluated up to an interval after the tenant rules: waited for.
    assert stack.wait_for("region:cdn_active_tenants:count == 4", timeout=10)


def test_alerts_see_the_failing_origins(stack: PrometheusServer) -> None:
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
