"""`cdnctl sync` against a real bare git repository and four real edges (2 regions x 2)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from cdnctl.cli.app import app
from cdnctl.edge.runner import free_port
from cdnctl.fleet import sync
from cdnctl.fleet.sync import Syncer, SyncSettings
from cdnctl.fleet.sync_server import SIGNATURE_HEADER, SyncServer, signature
from tests.conftest import tenant_doc
from tests.edge.conftest import ADMIN_TOKEN, make_node, make_origin
from tests.fleet.pebble import make_pebble

__all__ = ["make_node", "make_origin", "make_pebble"]
pytestmark = pytest.mark.integration
REGIONS = {"eu1": "eu", "eu2": "eu", "us1": "us", "us2": "us"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


class Repo:
    """A bare repository (what sync fetches) and a work clone that commits and pushes."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "tenants.git"
        self.work = root / "work"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git(root, "clone", "--quiet", str(self.bare), str(self.work))
        git(self.work, "config", "user.email", "ci@cdnctl.test")
        git(self.work, "config", "user.name", "ci")
        (self.work / "tenants").mkdir()

    def write(self, tenant: str, origin: str, **overrides) -> None:
        doc = tenant_doc(tenant, origin={"url": f"http://{origin}"}, **overrides)
        (self.work / "tenants" / f"{tenant}.yaml").write_text(yaml.safe_dump(doc))

    def remove(self, tenant: str) -> None:
        (self.work / "tenants" / f"{tenant}.yaml").unlink()

    def commit(self, message: str) -> str:
        git(self.work, "add", "--all", "tenants")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")


def started_syncer(repo: Repo, inventory: Path, workdir: Path) -> Syncer:
    """A Syncer of `repo`'s main branch that has applied its first commit."""
    syncer = Syncer(
        SyncSettings(
            repo=str(repo.bare),
            branch="main",
            inventory=inventory,
            workdir=workdir,
            state_file=workdir / "state.json",
            token=ADMIN_TOKEN,
            canary_window=0.2,
        )
    )
    first = syncer.cycle()
    assert first.outcome == "applied", first
    return syncer


def build_fleet(tmp_path: Path, make_node, make_origin, monkeypatch, shields=()) -> dict:
    """Four edges (`REGIONS`) and `shields` ((name, region) pairs), an origin, the
    repository and an inventory naming them; the first commit applied."""
    groups = {"edge": dict(REGIONS), "shield": dict(shields)}
    nodes = {name: make_node(name) for group in groups.values() for name in group}
    origin = make_origin("site")
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_private_origins: true\n"
    )
    children = {}
    for group, members in groups.items():
        hosts = {}
        for name, region in members.items():
            public_host, _, public_port = nodes[name].edge.settings.listen.rpartition(":")
            admin_host, _, admin_port = nodes[name].edge.settings.admin_listen.rpartition(":")
            hosts[name] = {
                "cdn_region": region,
                "cdn_public_address": public_host,
                "cdn_public_http_port": int(public_port),
                "cdn_private_address": admin_host,
                "cdn_admin_api_port": int(admin_port),
            }
        if hosts:
            children[group] = {"hosts": hosts}
    (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": children}}))
    repo = Repo(tmp_path)
    repo.write("site", origin.address)
    first = repo.commit("site")
    monkeypatch.setenv("CDNCTL_ADMIN_TOKEN", ADMIN_TOKEN)
    syncer = started_syncer(repo, inventory, tmp_path / "sync")
    return {
        "nodes": nodes,
        "origin": origin,
        "repo": repo,
        "syncer": syncer,
        "inventory": inventory,
        "first": first,
        "tmp": tmp_path,
    }


@pytest.fixture
def fleet(tmp_path: Path, make_node, make_origin, monkeypatch):
    return build_fleet(tmp_path, make_node, make_origin, monkeypatch)


def configs(fleet) -> dict[str, dict]:
    return {name: node.admin.get("/config").json() for name, node in fleet["nodes"].items()}


def test_a_new_tenant_is_served_by_every_edge_after_one_cycle(fleet):
    repo, syncer = fleet["repo"], fleet["syncer"]
    assert {c["commit"] for c in configs(fleet).values()} == {fleet["first"]}
    repo.write("shop", fleet["origin"].address)
    commit = repo.commit("onboard shop")
    result = syncer.cycle()
    assert (result.outcome, result.commit) == ("applied", commit), result
    assert {c["commit"] for c in configs(fleet).values()} == {commit}
    for node in fleet["nodes"].values():
        assert node.get("cdn.shop.test", "/index.html").status_code == 200
    assert syncer.state.last_good.commit == commit
    assert syncer.cycle().outcome == "unchanged"  # nothing new, nothing drifted


def test_a_commit_that_changes_no_tenant_is_recorded_on_every_edge(fleet):
    repo, syncer = fleet["repo"], fleet["syncer"]
    before = {c["version"] for c in configs(fleet).values()}
    commit = repo.commit("docs only")  # empty: the same bundle
    result = syncer.cycle()
    assert (result.outcome, result.commit) == ("applied", commit), result
    after = configs(fleet).values()
    assert {c["commit"] for c in after} == {commit}
    assert {c["version"] for c in after} == before


def test_a_broken_tenant_is_rejected_on_its_file_and_nothing_changes(fleet):
    repo, syncer = fleet["repo"], fleet["syncer"]
    before = configs(fleet)
    # claims the domain tenant `site` already owns: reported on the file the commit adds
    repo.write("bad", fleet["origin"].address, domains=["cdn.site.test"])
    commit = repo.commit("bad tenant")
    result = syncer.cycle()
    assert (result.outcome, result.reason, result.commit) == ("rejected", "invalid", commit)
    assert "bad.yaml" in result.detail and "site" in result.detail, result.detail
    assert "site.yaml" not in result.detail.split(":")[0]
    assert configs(fleet) == before
    assert syncer.metrics.failures["invalid"] == 1
    assert syncer.state.last_good.commit == fleet["first"]
    assert syncer.cycle().outcome == "unchanged"  # the rejected commit is not tried again
    # the next good commit applies normally
    repo.remove("bad")
    repo.write("shop", fleet["origin"].address)
    fixed = repo.commit("fix")
    assert syncer.cycle().outcome == "applied"
    assert {c["commit"] for c in configs(fleet).values()} == {fixed}


def test_a_commit_rejected_for_a_missing_secret_is_tried_again_once_it_is_there(fleet, monkeypatch):
    repo, syncer = fleet["repo"], fleet["syncer"]
    monkeypatch.delenv("SHOP_ORIGIN_PASSWORD", raising=False)
    origin = {
        "url": f"http://{fleet['origin'].address}",
        "basic_auth": {"username": "cdn", "password_env": "SHOP_ORIGIN_PASSWORD"},
    }
    doc = tenant_doc("shop", origin=origin)
    (repo.work / "tenants" / "shop.yaml").write_text(yaml.safe_dump(doc))
    commit = repo.commit("shop, whose secret the control node lacks")
    result = syncer.cycle()
    assert (result.outcome, result.reason) == ("rejected", "secrets"), result
    assert "SHOP_ORIGIN_PASSWORD" in result.detail
    assert syncer.cycle().outcome == "unchanged"  # backing off (30 s)
    monkeypatch.setattr(sync, "RETRY_FIRST", 0.0)
    assert syncer.cycle().reason == "secrets"  # tried again: still missing
    assert syncer.state.last_rejected.attempts == 2
    monkeypatch.setenv("SHOP_ORIGIN_PASSWORD", "s3cret")  # the operator fixes the node
    result = syncer.cycle()
    assert (result.outcome, result.commit) == ("applied", commit), result
    assert {c["commit"] for c in configs(fleet).values()} == {commit}
    for node in fleet["nodes"].values():
        assert node.get("cdn.shop.test", "/index.html").status_code == 200


def test_a_failed_canary_is_rolled_back_and_the_rest_never_see_it(fleet):
    repo, syncer = fleet["repo"], fleet["syncer"]
    before = configs(fleet)
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: the smoke request gets a 502
    repo.write("broken", closed)
    repo.commit("origin down")
    result = syncer.cycle()
    assert (result.outcome, result.reason) == ("rejected", "canary"), result
    assert "broken" in result.detail
    after = configs(fleet)
    assert {name: c["version"] for name, c in after.items()} == {
        name: c["version"] for name, c in before.items()
    }
    canaries = [name for name, what in result.edges.items() if what.startswith("rolled back")]
    assert sorted(REGIONS[name] for name in canaries) == ["eu", "us"]  # one per region
    others = set(REGIONS) - set(canaries)
    assert len(others) == 2 and not others & set(result.edges)  # never pushed to
    assert all(after[name]["commit"] == fleet["first"] for name in others)
    assert syncer.metrics.failures["canary"] == 1
    text = syncer.metrics.render()
    assert 'cdn_sync_failures_total{reason="canary"} 1' in text
    assert re.search(r"cdn_sync_last_success_timestamp_seconds [1-9]", text)


def test_an_edit_that_breaks_a_running_tenant_is_caught_by_the_canary(fleet, monkeypatch):
    """A settings edit compiles by patching the last bundle; the canary check then knows
    the changed tenants from the compile (it reads no edge's digests): the broken one is
    smoke-tested, and the fleet keeps the last good commit."""
    repo, syncer = fleet["repo"], fleet["syncer"]
    asked = []
    real = sync.AdminClient.running_tenants
    monkeypatch.setattr(
        sync.AdminClient, "running_tenants", lambda self: asked.append(1) or real(self)
    )
    repo.write("site", fleet["origin"].address, cache={"default_ttl": "2m"})
    good = repo.commit("site ttl 2m")
    assert syncer.cycle().outcome == "applied"
    assert not asked  # the canaries ran the bundle this compile patched
    repo.write("site", f"127.0.0.1:{free_port()}", cache={"default_ttl": "2m"})  # closed
    repo.commit("site origin moved")
    result = syncer.cycle()
    assert (result.outcome, result.reason) == ("rejected", "canary"), result
    assert "site" in result.detail
    assert {c["commit"] for c in configs(fleet).values()} == {good}


def test_shields_take_a_commit_with_the_canaries_and_go_back_with_them(
    tmp_path, make_node, make_origin, monkeypatch
):
    fleet = build_fleet(tmp_path, make_node, make_origin, monkeypatch, [("eu-shield", "eu")])
    repo, syncer, shield = fleet["repo"], fleet["syncer"], fleet["nodes"]["eu-shield"]
    assert shield.admin.get("/config").json()["commit"] == fleet["first"]
    before = shield.admin.get("/config").json()["version"]
    repo.write("broken", f"127.0.0.1:{free_port()}")
    repo.commit("origin down")
    result = syncer.cycle()
    assert (result.outcome, result.reason) == ("rejected", "canary"), result
    assert result.edges["eu-shield"].startswith("rolled back"), result
    assert shield.admin.get("/config").json()["version"] == before
    repo.remove("broken")
    repo.write("shop", fleet["origin"].address)
    commit = repo.commit("shop")
    result = syncer.cycle()
    assert result.outcome == "applied" and result.edges["eu-shield"].startswith("sent"), result
    assert {c["commit"] for c in configs(fleet).values()} == {commit}


def test_a_new_acme_tenant_gets_its_certificate_on_every_edge(fleet, make_pebble, capsys):
    """A real pebble: its HTTP-01 checks reach eu1 (every edge serves the tokens)."""
    repo, syncer, nodes = fleet["repo"], fleet["syncer"], fleet["nodes"]
    pebble = make_pebble(int(nodes["eu1"].address.rpartition(":")[2]))
    settings = {
        "directory_url": pebble.directory_url,
        "ca_bundle": str(pebble.listener_ca),
        "state_dir": str(fleet["tmp"] / "certificates"),
    }
    certificates_yml = fleet["inventory"] / "group_vars" / "all" / "certificates.yml"
    certificates_yml.write_text(yaml.safe_dump({"cdn_acme": settings}))
    repo.write("shop", fleet["origin"].address)
    repo.commit("shop, with an ACME certificate (the default)")
    capsys.readouterr()
    assert syncer.cycle().outcome == "applied"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    issued = next(r for r in logged if r["event"] == "sync_certificates")
    assert issued["ok"] and sorted(issued["issued"]) == ["shop", "site"], issued
    for node in nodes.values():
        assert set(node.admin.get("/certificates").json()["certificates"]) == {"shop", "site"}
    # A commit that needs no other certificate does not run the converge again (about 1 s
    # a cycle); one that adds an ACME tenant does.
    repo.write("shop", fleet["origin"].address, name="Shop, renamed")
    repo.commit("shop renamed: the same certificates")
    assert syncer.cycle().outcome == "applied"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    again = next(r for r in logged if r["event"] == "sync_certificates")
    assert again["ok"] and again.get("unchanged") is True, again
    repo.write("blog", fleet["origin"].address)
    repo.commit("blog, a new ACME tenant")
    assert syncer.cycle().outcome == "applied"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    third = next(r for r in logged if r["event"] == "sync_certificates")
    assert third["ok"] and third["issued"] == ["blog"], third


def test_a_removed_tenant_is_404_everywhere_and_its_cache_purged(fleet):
    repo, syncer, nodes = fleet["repo"], fleet["syncer"], fleet["nodes"]
    repo.write("gone", fleet["origin"].address)
    repo.commit("gone")
    assert syncer.cycle().outcome == "applied"
    for node in nodes.values():
        node.get("cdn.gone.test", "/obj")
        assert node.get("cdn.gone.test", "/obj").headers["X-Cache-Status"] == "HIT"
    repo.remove("gone")
    repo.commit("remove gone")
    assert syncer.cycle().outcome == "applied"
    assert {node.get("cdn.gone.test", "/obj").status_code for node in nodes.values()} == {404}
    repo.write("gone", fleet["origin"].address)
    repo.commit("gone again")
    assert syncer.cycle().outcome == "applied"
    statuses = {
        node.get("cdn.gone.test", "/obj").headers["X-Cache-Status"] for node in nodes.values()
    }
    assert statuses == {"MISS"}  # its cache went with it


def test_an_edge_that_was_down_catches_up(fleet):
    repo, syncer, nodes = fleet["repo"], fleet["syncer"], fleet["nodes"]
    nodes["us2"].edge.stop()
    repo.write("shop", fleet["origin"].address)
    commit = repo.commit("shop while us2 is down")
    result = syncer.cycle()
    assert result.outcome == "applied" and result.edges["us2"] == "unreachable", result
    nodes["us2"].edge.start()
    assert nodes["us2"].admin.get("/config").json()["commit"] == fleet["first"]
    result = syncer.cycle()
    assert result.outcome == "caught_up" and list(result.edges) == ["us2"], result
    assert {c["commit"] for c in configs(fleet).values()} == {commit}


def test_a_commit_waits_while_no_edge_answers_then_is_canaried(fleet):
    repo, syncer, nodes = fleet["repo"], fleet["syncer"], fleet["nodes"]
    for node in nodes.values():
        node.edge.stop()
    repo.write("shop", fleet["origin"].address)
    commit = repo.commit("shop while every edge is down")
    result = syncer.cycle()
    assert (result.outcome, result.reason, result.ok) == ("waiting", "unreachable", False)
    assert syncer.state.last_good.commit == fleet["first"] and syncer.state.last_rejected is None
    nodes["eu1"].edge.start()
    result = syncer.cycle()
    assert result.outcome == "applied" and result.edges["eu1"].startswith("canary"), result
    assert nodes["eu1"].admin.get("/config").json()["commit"] == commit


def test_the_webhook_triggers_a_cycle_and_refuses_a_bad_signature(fleet):
    repo, syncer = fleet["repo"], fleet["syncer"]
    trigger, stopping = threading.Event(), threading.Event()
    secret = b"hook-secret"
    server = SyncServer("127.0.0.1:0", syncer.metrics, trigger, secret).start()
    loop = threading.Thread(
        target=syncer.run_forever, args=(60.0, trigger, stopping.is_set), daemon=True
    )
    loop.start()
    try:
        url = f"http://{server.address}"
        body = b'{"ref": "refs/heads/main"}'
        bad = httpx.post(f"{url}/hook", content=body, headers={SIGNATURE_HEADER: "sha256=00"})
        assert bad.status_code == 401
        assert httpx.post(f"{url}/hook", content=body).status_code == 401
        repo.write("shop", fleet["origin"].address)
        commit = repo.commit("shop")
        good = httpx.post(
            f"{url}/hook", content=body, headers={SIGNATURE_HEADER: signature(secret, body)}
        )
        assert good.status_code == 202
        for _ in range(200):  # bounded: a cycle with 4 edges takes about a second
            if syncer.state.last_good.commit == commit:
                break
            stopping.wait(0.05)
        assert syncer.state.last_good.commit == commit
        assert "cdn_sync_cycles_total" in httpx.get(f"{url}/metrics").text
    finally:
        stopping.set()
        trigger.set()
        loop.join(timeout=30)
        server.stop()


def test_cli_once_exits_0_on_a_good_commit_and_1_on_a_rejected_one(fleet):
    repo, tmp = fleet["repo"], fleet["tmp"]
    args = [
        "sync",
        "--repo",
        str(repo.bare),
        "--branch",
        "main",
        "--inventory",
        str(fleet["inventory"]),
        "--state-dir",
        str(tmp / "cli-state"),
        "--once",
    ]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert fleet["first"][:12] in ok.stdout
    repo.write("bad", fleet["origin"].address, domains=["cdn.site.test"])
    repo.commit("bad")
    rejected = CliRunner().invoke(app, args)
    assert rejected.exit_code == 1, rejected.output
    assert "rejected" in rejected.stdout and "bad.yaml" in rejected.stdout
