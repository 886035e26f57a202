"""Fixtures for monitoring tests: the data-plane fixtures of tests/edge (real nginx nodes,
sample origins) and a real Prometheus server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from cdnctl.edge.runner import free_port
from cdnctl.fleet import monitoring
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
