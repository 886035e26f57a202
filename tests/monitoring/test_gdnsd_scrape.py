"""A real Prometheus scraping the geodns role's gdnsd exporter next to a real gdnsd.

The targets come from the same file_sd rendering as production (job gdnsd, the DNS host's
cdn_private_address and cdn_gdnsd_exporter_port); the exporter's target and Prometheus's own
are up, the exporter's series carry the region's labels, DNS traffic shows in the rates, and
a stopped gdnsd makes CdnGeoDnsDown pending with its cause while the exporter stays up.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdnctl.edge.runner import free_port
from cdnctl.fleet import dns
from tests.fleet.conftest import Gdnsd, query
from tests.monitoring.conftest import REGION, PrometheusServer

pytestmark = pytest.mark.integration

EXPORTER = Path(__file__).resolve().parents[2] / "roles/geodns/files/gdnsd_exporter.py"
SETTINGS = dns.parse_settings({"domain": "cdn.test", "regions": {REGION: {"nets": []}}})
FLEET = dns.Fleet(
    edges=(dns.Host("lab-edge-1", REGION, "127.0.0.11"),),
    dns=(dns.Host("lab-dns-1", REGION, "127.0.0.1"),),
)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, Gdnsd]]:
    server = Gdnsd("scrape")
    config = dns.render_config(SETTINGS, FLEET, server.server)
    dns.write_tree(server.config_dir, config, dns.render_zones(SETTINGS, FLEET, []))
    port = free_port()
    exporter = prometheus = None
    try:
        server.start()
        # As its unit runs it: the system python3, as gdnsd (whose control socket it is).
        as_gdnsd = ["setpriv", "--reuid=gdnsd", "--regid=gdnsd", "--init-groups"]
        exporter = subprocess.Popen(
            [
                *(as_gdnsd if os.geteuid() == 0 else []),
                "/usr/bin/python3",
                str(EXPORTER),
                f"--listen=127.0.0.1:{port}",
                f"--config-dir={server.config_dir}",
                "--timeout=2",
            ],
            stderr=subprocess.DEVNULL,
        )
        prometheus = PrometheusServer(
            tmp_path_factory.mktemp("gdnsd-prometheus"),
            REGION,
            hostvars={
                "lab-dns-1": {
                    "cdn_region": REGION,
                    "cdn_role": "dns",
                    "cdn_private_address": "127.0.0.1",
                    "cdn_gdnsd_exporter_port": port,
                }
            },
            groups={"dns": ["lab-dns-1"]},
        ).start()
        yield prometheus, server
    finally:
        if prometheus is not None:
            prometheus.stop()
        if exporter is not None:
            exporter.terminate()
            exporter.wait(timeout=10)
        server.stop()


def test_every_target_is_up_with_the_region_s_labels(
    scraped: tuple[PrometheusServer, Gdnsd],
) -> None:
    prometheus, _ = scraped
    [dns_up] = prometheus.wait_for('gdnsd_up{job="gdnsd"} == 1')
    assert {k: dns_up["metric"][k] for k in ("region", "role", "host")} == {
        "region": REGION,
        "role": "dns",
        "host": "lab-dns-1",
    }
    # The DNS host's node exporter target (job node) is not run here: only its own jobs.
    assert prometheus.wait_for('count(up{job=~"gdnsd|prometheus"} == 1) == 2')
    assert prometheus.query('up{job=~"gdnsd|prometheus"} == 0')["data"]["result"] == []


def test_dns_traffic_shows_in_the_rates(scraped: tuple[PrometheusServer, Gdnsd]) -> None:
    prometheus, server = scraped
    prometheus.wait_for('gdnsd_requests_total{protocol="udp"}')
    for _ in range(3):  # a scrape (1 s) apart: rate() needs two samples that differ
        for _ in range(10):
            assert query(server.port, "ns1.cdn.test") == ["127.0.0.1"]
        time.sleep(1.1)
    rate = prometheus.wait_for('rate(gdnsd_responses_total{rcode="noerror"}[10s]) > 0')
    assert rate[0]["metric"]["host"] == "lab-dns-1"
    assert prometheus.wait_for(
        f'gdnsd_service_monitored_up{{resource="127.0.0.11/{dns.SERVICE_TYPE}"}}'
    )


def test_a_stopped_gdnsd_makes_the_alert_pending_with_its_cause(
    scraped: tuple[PrometheusServer, Gdnsd],
) -> None:
    """Last: the module's gdnsd stays stopped."""
    prometheus, server = scraped
    assert server.proc is not None
    server.proc.terminate()
    server.proc.wait(timeout=10)
    [alert] = prometheus.wait_for('ALERTS{alertname="CdnGeoDnsDown"}', timeout=30)
    assert alert["metric"]["cause"] == "gdnsd does not answer its exporter"
    assert alert["metric"]["host"] == "lab-dns-1"
    assert prometheus.wait_for('up{job="gdnsd"} == 1')  # the exporter still answers
