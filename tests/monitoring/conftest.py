"""Fixtures for monitoring tests: the data-plane fixtures of tests/edge (real nginx nodes,
sample origins) and a real Prometheus server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdnctl.bundle.synthetic import bundle_bytes, make_bundle, tenant
from cdnctl.edge.nginx_conf import NodeSettings
from cdnctl.edge.runner import EdgeNode, free_port
from cdnctl.fleet import monitoring
from cdnctl.lab.sample_origin import SampleOrigin
from tests.edge.conftest import ADMIN_TOKEN, Node, make_node, make_origin

__all__ = ["ADMIN_TOKEN", "Node", "PrometheusServer", "make_node", "make_origin"]


class PrometheusServer:
    """Debian's prometheus binary with cdnctl's rendered config, rules and file_sd targets.

    `hostvars`/`groups` are an inventory as Ansible sees it; the server scrapes every second
    so a test sees rates within seconds.
    """

    def __init__(
        self,
        directory: Path,
        region: str,
        hostvars: dict[str, dict[str, Any]],
        groups: dict[str, list[str]],
        admin_token: str = ADMIN_TOKEN,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "rules.yml").write_text(monitoring.render_rules())
        token = directory / "admin_token"
        token.write_text(admin_token + "\n")
        token.chmod(0o600)
        hostvars = {
            **hostvars,
            "prometheus-1": {
                "cdn_region": region,
                "cdn_role": "prometheus",
                "cdn_private_address": "127.0.0.1",
                "cdn_prometheus_port": self.port,
            },
        }
        groups = {**groups, "prometheus": [*groups.get("prometheus", []), "prometheus-1"]}
        monitoring.write_targets(directory / "file_sd", hostvars, groups, region)
        settings = monitoring.PrometheusSettings(
            region=region,
            scrape_interval="1s",
            scrape_timeout="1s",
            evaluation_interval="1s",
            rules_file=str(directory / "rules.yml"),
            file_sd_dir=str(directory / "file_sd"),
            admin_token_file=str(token),
        )
        (directory / "prometheus.yml").write_text(monitoring.render_config(settings))
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 30) -> PrometheusServer:
        log = (self.directory / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")[-3000:]

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query (status, data or error), errors included."""
        return self.client.get("/api/v1/query", params={"query": expr}).json()

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The result of `expr` once it is not empty."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.query(expr)
            if answer["status"] == "success" and answer["data"]["result"]:
                return answer["data"]["result"]
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr}: no data after {timeout}s: {answer}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.client.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


REGION = "lab"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One edge, four tenants (a healthy origin, one rejecting the edge's credentials, one
    answering 503, one gone after its object was cached: stale served), traffic and purges,
    and a real Prometheus scraping the edge's admin /metrics with the token, rules evaluated."""
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
            # Purge history: one URL purge a round (the round's paths are its own).
            assert node.purge({"tenant": "shop", "urls": [f"/a{round_}"]}).status_code == 200
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
