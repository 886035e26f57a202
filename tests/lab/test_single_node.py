"""`cdnctl lab` (what `make lab` runs): the sample tenants through a real edge."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.runner import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_lab_serves_every_sample_tenant(monkeypatch):
    monkeypatch.delenv("CUSTOMER_B_ORIGIN_PASSWORD", raising=False)
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        [
            "lab",
            "--smoke",
            "--tenants",
            str(ROOT / "tenants"),
            "--listen",
            listen,
            "--admin-listen",
            admin,
        ],
    )
    assert result.exit_code == 0, result.output
    for tenant in ("customer-a", "customer-b", "customer-c"):
        assert f"{tenant}" in result.stderr
    assert result.stderr.count("HTTP 200") == 3
    assert "(basic auth)" in result.stderr  # customer-b's origin demanded the password
    assert f"curl -i -H 'Host: cdn.customer-a.test' http://{listen}/index.html" in result.stderr
