"""`cdnctl preview` end to end: real nginx, hot apply on file change, bad change ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
import yaml

from cdnctl.cli.preview import register
from cdnctl.edge.runner import free_port
from cdnctl.lab.sample_origin import body_for

pytestmark = pytest.mark.integration

RUNNER = """
import typer
from cdnctl.cli.preview import register

app = typer.Typer()
register(app)

@app.callback()
def main() -> None:
    pass

app()
"""


def test_register_adds_the_preview_command():
    app = typer.Typer()
    register(app)
    assert [c.name for c in app.registered_commands] == ["preview"]


def write_tenant(directory: Path, port: int, domains: list[str]) -> None:
    doc = {
        "id": "alpha",
        "name": "Alpha",
        "contact": "ops@alpha.test",
        "domains": domains,
        "origin": {"url": f"http://origin.alpha.test:{port}"},
        "cache": {"default_ttl": "1h"},
    }
    (directory / "alpha.yaml").write_text(yaml.safe_dump(doc))


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def children(pid: int) -> list[int]:
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def test_preview_serves_and_hot_applies(tmp_path, make_origin):
    origin = make_origin("alpha")
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    write_tenant(tenants, origin.port, ["cdn.alpha.test"])
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log = tmp_path / "preview.log"
    env = {**os.environ, "CDNCTL_ADMIN_TOKEN": "preview-token"}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                RUNNER,
                "preview",
                "--tenants",
                str(tenants),
                "--listen",
                listen,
                "--admin-listen",
                admin,
                "--allow-private-origins",
                "--resolve",
                "origin.alpha.test:127.0.0.1",
                "--workers",
                "2",
            ],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            env=env,
        )
    try:

        def version() -> str | None:
            try:
                return httpx.get(f"http://{admin}/health", timeout=1).json()["version"]
            except httpx.HTTPError:
                return None

        wait_for(lambda: version() is not None, 20, "the first apply")
        first = version()
        client = httpx.Client(base_url=f"http://{listen}", timeout=5)
        response = client.get("/x", headers={"Host": "cdn.alpha.test"})
        assert response.content == body_for("alpha", "/x", 1024)
        master = int(log.read_text().split("nginx master pid ")[1].split(",")[0])
        workers = children(master)

        write_tenant(tenants, origin.port, ["cdn.alpha.test", "www.alpha.test"])
        changed = time.monotonic()
        wait_for(lambda: version() not in (None, first), 5, "the hot apply")
        assert time.monotonic() - changed < 2.5
        assert client.get("/y", headers={"Host": "www.alpha.test"}).status_code == 200
        assert children(master) == workers

        second = version()
        (tenants / "alpha.yaml").write_text("id: alpha\ndomains: [not a domain!!]\n")
        wait_for(lambda: "still serving" in log.read_text(), 5, "the validation errors")
        assert version() == second
        assert client.get("/z", headers={"Host": "www.alpha.test"}).status_code == 200
        client.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0
    assert "preview stopped" in log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{admin}/health", timeout=1)
