"""`cdnctl apply / purge / plan --edge` against real running edges."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.runner import free_port
from cdnctl.lab.sample_origin import body_for
from tests.conftest import tenant_doc
from tests.edge.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration
PASSWORD = "origin-pass-42"


@pytest.fixture
def lab(tmp_path: Path, make_origin, monkeypatch):
    """A tenants dir (one tenant behind basic auth) and a policy allowing 127.0.0.1 origins."""
    origin = make_origin("shop", basic_auth=("cdn", PASSWORD))
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    doc = tenant_doc(
        "shop",
        domains=["cdn.shop.test"],
        origin={
            "url": f"http://{origin.address}",
            "basic_auth": {"username": "cdn", "password_env": "SHOP_ORIGIN_PASSWORD"},
        },
        purge_tokens_env=["SHOP_PURGE_TOKEN"],
    )
    (tenants / "shop.yaml").write_text(yaml.safe_dump(doc))
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_private_origins: true\n"
    )
    monkeypatch.setenv("CDNCTL_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("SHOP_ORIGIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("SHOP_PURGE_TOKEN", "shop-purge-token")
    monkeypatch.chdir(tmp_path)
    return {"tenants": tenants, "inventory": inventory, "origin": origin}


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def edge_args(*nodes) -> list[str]:
    return [arg for node in nodes for arg in ("--edge", node.edge.admin_url)]


def base_args(lab) -> list[str]:
    return ["--tenants", str(lab["tenants"]), "--inventory", str(lab["inventory"])]


def test_apply_pushes_to_every_edge_with_secrets_resolved(lab, make_node):
    one, two = make_node("one"), make_node("two")
    result = cli("apply", *edge_args(one, two), *base_args(lab), "--commit", "c0ffee")
    assert result.exit_code == 0, result.output
    assert result.stdout.count(" ok ") == 2
    versions = {node.admin.get("/config").json()["version"] for node in (one, two)}
    assert len(versions) == 1 and versions != {None}
    assert one.admin.get("/config").json()["commit"] == "c0ffee"
    response = one.get("cdn.shop.test", "/index.html")
    assert response.status_code == 200
    assert response.content == body_for("shop", "/index.html", 1024)
    seen = lab["origin"].seen[-1].headers
    assert seen["Authorization"].startswith("Basic ")  # resolved from the environment
    again = cli("apply", *edge_args(one), *base_args(lab), "--commit", "c0ffee")
    row = next(line for line in again.stdout.splitlines() if " ok " in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[-4:-2] == ["0", "0"]  # Changed, Removed: nothing to write again
    assert f"{one.edge.settings.admin_listen}: sent nothing" in again.stdout  # up to date
    # A commit that changes no tenant (docs, comments): the edges record it all the same.
    relabel = cli("apply", *edge_args(one), *base_args(lab), "--commit", "5ca1ab1e")
    assert relabel.exit_code == 0, relabel.output
    assert "sent nothing" not in relabel.stdout  # a self-delta, or the (tiny) bundle
    config = one.admin.get("/config").json()
    assert config["commit"] == "5ca1ab1e" and config["version"] in versions
    assert one.get("cdn.shop.test", "/index.html").status_code == 200


def test_apply_sends_a_delta_to_an_edge_running_an_earlier_compile(lab, make_node):
    one, fresh = make_node("one"), make_node("fresh")
    tenants = lab["tenants"]
    plain = {"url": f"http://{lab['origin'].address}"}  # no secret: sent only when it changes
    for name in ("p1", "p2", "p3", "p4"):
        (tenants / f"{name}.yaml").write_text(yaml.safe_dump(tenant_doc(name, origin=plain)))
    assert cli("apply", *edge_args(one), *base_args(lab)).exit_code == 0
    (tenants / "blog.yaml").write_text(yaml.safe_dump(tenant_doc("blog", origin=plain)))
    plan = json.loads(
        cli("plan", *edge_args(one, fresh), *base_args(lab), "--format", "json").stdout
    )
    assert [row["send"] for row in plan["edges"]] == ["delta", "full"]
    result = cli("apply", *edge_args(one, fresh), *base_args(lab))
    assert result.exit_code == 0, result.output
    sent = [line.split()[2] for line in result.stdout.splitlines() if ": sent " in line]
    assert sent == ["delta", "full"]
    configs = [node.admin.get("/config").json() for node in (one, fresh)]
    assert configs[0]["content"] == configs[1]["content"]  # the same bytes, either way
    assert configs[0]["tenants"] == 6
    assert one.get("cdn.blog.test", "/x").status_code in (200, 401)  # routed to the origin


def test_apply_reads_the_base_manifest_from_the_edge_when_not_compiled_here(lab, make_node):
    node = make_node()
    plain = {"url": f"http://{lab['origin'].address}"}
    for name in ("p1", "p2", "p3", "p4"):
        (lab["tenants"] / f"{name}.yaml").write_text(yaml.safe_dump(tenant_doc(name, origin=plain)))
    assert cli("apply", *edge_args(node), *base_args(lab)).exit_code == 0
    shutil.rmtree(".cdnctl-cache")  # as on a fresh CI runner
    (lab["tenants"] / "blog.yaml").write_text(yaml.safe_dump(tenant_doc("blog", origin=plain)))
    result = cli("apply", *edge_args(node), *base_args(lab))
    assert result.exit_code == 0, result.output
    assert ": sent delta" in result.stdout
    assert node.admin.get("/config").json()["tenants"] == 6


def test_a_rotated_origin_password_goes_out_as_a_delta(lab, make_node, monkeypatch):
    node = make_node()
    plain = {"url": f"http://{lab['origin'].address}"}
    for name in ("p1", "p2", "p3", "p4"):
        (lab["tenants"] / f"{name}.yaml").write_text(yaml.safe_dump(tenant_doc(name, origin=plain)))
    assert cli("apply", *edge_args(node), *base_args(lab)).exit_code == 0
    before = node.admin.get("/config").json()
    lab["origin"].expected_auth = "Basic " + base64.b64encode(b"cdn:rotated").decode()
    monkeypatch.setenv("SHOP_ORIGIN_PASSWORD", "rotated")
    result = cli("apply", *edge_args(node), *base_args(lab))
    assert result.exit_code == 0, result.output
    assert ": sent delta" in result.stdout
    after = node.admin.get("/config").json()
    assert after["version"] == before["version"] and after["content"] != before["content"]
    assert node.get("cdn.shop.test", "/rotated").status_code == 200


def test_apply_without_the_secret_changes_nothing(lab, make_node, monkeypatch):
    node = make_node()
    monkeypatch.delenv("SHOP_ORIGIN_PASSWORD")
    result = cli("apply", *edge_args(node), *base_args(lab))
    assert result.exit_code == 1
    assert "SHOP_ORIGIN_PASSWORD" in result.stderr
    assert node.admin.get("/config").json()["version"] is None


def test_apply_reports_each_edge_and_fails_if_one_fails(lab, make_node):
    node = make_node()
    dead = f"http://127.0.0.1:{free_port()}"
    result = cli("apply", *edge_args(node), "--edge", dead, *base_args(lab))
    assert result.exit_code == 1
    assert "1 of 2 edge(s) failed" in result.stderr
    assert "ConnectError" in result.stdout
    assert node.admin.get("/config").json()["version"] is not None


def test_wrong_token_is_refused(lab, make_node, monkeypatch):
    node = make_node()
    monkeypatch.setenv("CDNCTL_ADMIN_TOKEN", "wrong")
    result = cli("apply", *edge_args(node), *base_args(lab))
    assert result.exit_code == 1
    assert "HTTP 401" in result.stdout
    assert node.admin.get("/config").json()["version"] is None


def test_plan_against_edges(lab, make_node):
    node = make_node()
    plan = cli("plan", *edge_args(node), *base_args(lab), "--format", "json")
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["edges"][0]["action"] == "update"
    assert cli("apply", *edge_args(node), *base_args(lab)).exit_code == 0
    plan = json.loads(cli("plan", *edge_args(node), *base_args(lab), "--format", "json").stdout)
    assert plan["edges"][0]["action"] == "up to date"
    dead = cli("plan", "--edge", f"http://127.0.0.1:{free_port()}", *base_args(lab))
    assert dead.exit_code == 1 and "unreachable" in dead.stdout


def test_plan_against_edges_lists_tenants_by_digest(lab, make_node):
    node = make_node()
    first = json.loads(cli("plan", *edge_args(node), *base_args(lab), "--format", "json").stdout)
    assert first["edges"][0]["tenants"] == {"add": ["shop"], "change": [], "remove": []}
    assert cli("apply", *edge_args(node), *base_args(lab), "--commit", "abc").exit_code == 0
    tenants = lab["tenants"]
    doc = yaml.safe_load((tenants / "shop.yaml").read_text())
    doc["cache"] = {"default_ttl": "5m"}
    (tenants / "shop.yaml").write_text(yaml.safe_dump(doc))
    (tenants / "blog.yaml").write_text(yaml.safe_dump(tenant_doc("blog", origin=doc["origin"])))
    plan = cli("plan", *edge_args(node), *base_args(lab), "--format", "json")
    row = json.loads(plan.stdout)["edges"][0]
    assert (row["action"], row["running_commit"]) == ("update", "abc")
    assert row["tenants"] == {"add": ["blog"], "change": ["shop"], "remove": []}
    table = cli("plan", *edge_args(node), *base_args(lab))
    assert "add 1: blog" in table.stdout and "change 1: shop" in table.stdout


def test_purge_url_on_every_edge(lab, make_node):
    one, two = make_node("one"), make_node("two")
    assert cli("apply", *edge_args(one, two), *base_args(lab)).exit_code == 0
    for node in (one, two):
        node.get("cdn.shop.test", "/logo.png")
        assert node.get("cdn.shop.test", "/logo.png").headers["X-Cache-Status"] == "HIT"
    result = cli("purge", "shop", "--url", "/logo.png", *edge_args(one, two))
    assert result.exit_code == 0, result.output
    for node in (one, two):
        assert node.get("cdn.shop.test", "/logo.png").headers["X-Cache-Status"] != "HIT"


def test_purge_all_with_the_tenants_own_token(lab, make_node, tmp_path):
    node = make_node()
    assert cli("apply", *edge_args(node), *base_args(lab)).exit_code == 0
    node.get("cdn.shop.test", "/a")
    token = tmp_path / "shop.token"
    token.write_text("shop-purge-token\n")
    result = cli("purge", "shop", "--all", *edge_args(node), "--token-file", str(token))
    assert result.exit_code == 0, result.output
    assert node.get("cdn.shop.test", "/a").headers["X-Cache-Status"] != "HIT"


@pytest.mark.parametrize(
    "args",
    [[], ["--url", "/a", "--all"], ["--prefix", "img/"], ["--url", "a"]],
)
def test_purge_usage_errors(lab, args):
    result = cli("purge", "shop", *args, "--edge", "http://127.0.0.1:1")
    assert result.exit_code == 2


def test_edges_must_be_named(lab):
    assert cli("apply", "--tenants", str(lab["tenants"])).exit_code == 2
