"""GitOps on the lab: `cdnctl sync` follows a bare git repository of tenant files.

One `cdnctl sync --listen` process (the loop, as the systemd unit runs it) follows the
repository's main branch; each step commits, pushes and sends the signed webhook a git
server would send, then waits for what a client sees:
- a new tenant is served over HTTPS (a certificate from the lab's pebble) through GeoDNS by
  every edge of both regions; the time from the push is printed (bench/propagation.py
  measures it over many commits: these tests only wait, with a bound);
- a broken tenant is rejected and no edge changes;
- a change whose canary fails (the tenant's origin does not answer) is rolled back on the
  canaries and never reaches the other edges;
- a deleted tenant answers 404 everywhere and its cache is gone (the same object is a MISS
  when the tenant comes back);
- an edge stopped while a commit lands catches up when it starts again.
The repository starts as the project's own tenants/, so the lab runs the same bundle before
and after: the module's teardown pushes that state back and waits for every edge to run it.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdnctl.edge.admin_client import DEFAULT_ADMIN_PORT, AdminClient, Edge, EdgeError
from cdnctl.edge.runner import free_port
from cdnctl.fleet.sync_server import SIGNATURE_HEADER, signature
from cdnctl.lab.fleet import inventory_dir, lab_environment
from cdnctl.lab.smoke import https_get, resolve
from tests.conftest import ROOT
from tests.lab.conftest import FleetLab, podman

WAIT = 120.0  # bound of every wait: far above a cycle (a few seconds on the lab)
SECRET = b"lab-webhook-secret"
NEW = "customer-d"
NEW_NAME = "cdn.customer-d.test"
NEW_TENANT = """\
# Customer D: onboarded by a commit (tests/lab/test_sync.py).
id: customer-d
name: Customer D
contact: ops@customer-d.test
domains:
  - cdn.customer-d.test
origin:
  url: {origin}
  connect_timeout: 1s
  read_timeout: 5s
cache:
  default_ttl: 1h
"""
WORKING_ORIGIN = "http://origin.customer-a.test:18081"  # the lab origin of customer-a
DEAD_ORIGIN = "http://origin.customer-a.test:18099"  # nothing listens there


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> float:
    """Seconds until `check()` is truthy; fails naming `what` (and the last value)."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        try:
            last = check()
        except (httpx.HTTPError, EdgeError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last is True or (last and not isinstance(last, str)):
                return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last})")


@dataclass
class GitOps:
    lab: FleetLab
    bare: Path
    work: Path
    log: Path
    hook: str
    token: str
    root_pem: str

    def commit(self, message: str) -> str:
        git(self.work, "add", "--all", "tenants")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:main")
        commit = git(self.work, "rev-parse", "HEAD")
        body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
        httpx.post(
            self.hook, content=body, headers={SIGNATURE_HEADER: signature(SECRET, body)}
        ).raise_for_status()
        return commit

    def write_new(self, origin: str = WORKING_ORIGIN) -> None:
        (self.work / "tenants" / f"{NEW}.yaml").write_text(NEW_TENANT.format(origin=origin))

    def cycle_of(self, commit: str) -> dict[str, Any] | None:
        """The loop's sync_cycle log line for `commit`, once it has one."""
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if (
                    record.get("event") == "sync_cycle"
                    and record.get("commit") == commit
                    and record.get("outcome") in ("applied", "rejected")
                ):
                    return record
        return None

    def outcome(self, commit: str) -> dict[str, Any]:
        wait_for(f"a sync cycle for {commit[:12]}", lambda: self.cycle_of(commit))
        record = self.cycle_of(commit)
        assert record is not None
        return record

    def edges(self) -> dict[str, str]:
        return {h: a for r in self.lab.up.view.regions for h, a in r.edges.items()}

    def running(self) -> dict[str, dict[str, Any]]:
        out = {}
        for host, address in self.edges().items():
            with AdminClient(
                Edge(host, f"http://{address}:{DEFAULT_ADMIN_PORT}"), self.token
            ) as client:
                out[host] = client.running_config()
        return out

    def https(self, address: str, name: str, path: str) -> httpx.Response:
        context = ssl.create_default_context(cadata=self.root_pem)
        with httpx.Client(verify=context, timeout=10) as client:
            return https_get(client, address, name, path)


def served_everywhere(ops: GitOps, name: str, path: str) -> bool | str:
    """Every region's DNS host gives `name` an edge of its region, and every edge serves it
    over HTTPS with a certificate pebble issued (200)."""
    for region in ops.lab.up.view.regions:
        for dns_host, dns_address in region.dns.items():
            answer = resolve(dns_address, name, region.client_network)
            if not answer or not set(answer) <= set(region.edges.values()):
                return f"{dns_host} answers {answer or 'nothing'} for {name}"
        for host, address in region.edges.items():
            response = ops.https(address, name, path)
            if response.status_code != 200:
                return f"{host}: {response.status_code} {response.text[:120]}"
    return True


@pytest.fixture(scope="module")
def gitops(fleet_lab: FleetLab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitOps]:
    root = tmp_path_factory.mktemp("gitops")
    bare, work = root / "tenants.git", root / "work"
    git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git(root, "clone", "--quiet", str(bare), str(work))
    git(work, "config", "user.email", "lab@cdnctl.test")
    git(work, "config", "user.name", "lab")
    shutil.copytree(ROOT / "tenants", work / "tenants")
    git(work, "add", "--all", "tenants")
    git(work, "commit", "--quiet", "-m", "the project's tenants")
    git(work, "push", "--quiet", "origin", "HEAD:main")
    env = lab_environment()
    secret = root / "webhook-secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    listen = f"127.0.0.1:{free_port()}"
    log = root / "sync.log"
    argv = [
        *(str(Path(sys.executable).with_name("cdnctl")), "sync"),
        *("--repo", str(bare), "--inventory", str(inventory_dir())),
        *("--state-dir", str(root / "state"), "--interval", "2s", "--canary-window", "1"),
        *("--listen", listen, "--secret-file", str(secret)),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    ops = GitOps(
        fleet_lab,
        bare,
        work,
        log,
        f"http://{listen}/hook",
        env["CDNCTL_ADMIN_TOKEN"],
        fleet_lab.up.root_ca.read_text(),
    )
    try:
        before = {host: c["version"] for host, c in ops.running().items()}
        first = ops.outcome(git(work, "rev-parse", "HEAD"))
        assert first["outcome"] == "applied", first
        yield ops
        # Back to the project's tenants: the lab runs the bundle it ran before the module.
        shutil.rmtree(work / "tenants")
        shutil.copytree(ROOT / "tenants", work / "tenants")
        last = ops.commit("back to the project's tenants")
        assert ops.outcome(last)["outcome"] == "applied"
        wait_for(
            "every edge back on the lab's bundle",
            lambda: {h: c["version"] for h, c in ops.running().items()} == before,
        )
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"\nsync log: {log}")


def test_a_commit_onboards_a_tenant_on_every_edge(gitops: GitOps) -> None:
    gitops.write_new()
    start = time.monotonic()
    commit = gitops.commit("onboard customer-d")
    record = gitops.outcome(commit)
    assert record["outcome"] == "applied", record
    waited = wait_for(
        f"{NEW_NAME} over HTTPS via GeoDNS on every edge",
        lambda: served_everywhere(gitops, NEW_NAME, "/sync/onboarded.txt"),
    )
    print(f"\ncommit -> {NEW_NAME} served by every edge: {time.monotonic() - start:.1f} s")
    assert waited >= 0
    for host, config in gitops.running().items():
        assert config["commit"] == commit, host


def test_a_broken_tenant_is_rejected_and_nothing_changes(gitops: GitOps) -> None:
    before = gitops.running()
    (gitops.work / "tenants" / "broken.yaml").write_text(
        NEW_TENANT.replace("id: customer-d", "id: broken").format(origin=WORKING_ORIGIN)
    )  # same domain as customer-d: a conflict, reported on the file this commit adds
    commit = gitops.commit("a tenant that claims customer-d's domain")
    record = gitops.outcome(commit)
    assert record["outcome"] == "rejected" and record["reason"] == "invalid", record
    assert "broken.yaml" in record["detail"] and NEW in record["detail"], record["detail"]
    assert gitops.running() == before
    (gitops.work / "tenants" / "broken.yaml").unlink()


def test_a_failing_canary_is_rolled_back_and_the_rest_never_see_it(gitops: GitOps) -> None:
    before = gitops.running()
    gitops.write_new(origin=DEAD_ORIGIN)
    commit = gitops.commit("customer-d's origin moves to a port where nothing listens")
    record = gitops.outcome(commit)
    assert record["outcome"] == "rejected" and record["reason"] == "canary", record
    took = {h for h, what in record["edges"].items() if what.startswith("rolled back")}
    canaries = took & set(gitops.edges())  # the shields in front of them went back too
    assert {h.split("-")[0] for h in canaries} == {"eu", "us"} and len(canaries) == 2, took
    assert all(record["edges"].get(h) in (None, "unchanged") for h in set(gitops.edges()) - took)
    after = gitops.running()
    assert {h: c["version"] for h, c in after.items()} == {
        h: c["version"] for h, c in before.items()
    }
    assert all(c["commit"] != commit for c in after.values())
    gitops.write_new()  # the next good commit applies normally
    fixed = gitops.commit("customer-d's origin back")
    assert gitops.outcome(fixed)["outcome"] == "applied"


def test_deleting_a_tenant_removes_it_everywhere_and_purges_it(gitops: GitOps) -> None:
    path = "/sync/purged-on-delete.txt"
    wait_for(
        f"{NEW_NAME} on every edge", lambda: served_everywhere(gitops, NEW_NAME, "/sync/w.txt")
    )
    for host, address in gitops.edges().items():
        gitops.https(address, NEW_NAME, path)
        assert gitops.https(address, NEW_NAME, path).headers.get("X-Cache-Status") == "HIT", host
    (gitops.work / "tenants" / f"{NEW}.yaml").unlink()
    removed = gitops.commit("offboard customer-d")
    assert gitops.outcome(removed)["outcome"] == "applied"
    for region in gitops.lab.up.view.regions:
        for address in region.dns.values():
            assert resolve(address, NEW_NAME, region.client_network) == []
    for host, address in gitops.edges().items():
        response = httpx.get(f"http://{address}{path}", headers={"Host": NEW_NAME}, timeout=10)
        assert response.status_code == 404, (host, response.status_code, response.text[:200])
    gitops.write_new()
    back = gitops.commit("customer-d comes back")
    assert gitops.outcome(back)["outcome"] == "applied"
    wait_for(f"{NEW_NAME} back", lambda: served_everywhere(gitops, NEW_NAME, "/sync/w2.txt"))
    for host, address in gitops.edges().items():
        status = gitops.https(address, NEW_NAME, path).headers.get("X-Cache-Status")
        assert status == "MISS", f"{host}: {path} was still cached after the delete ({status})"


def test_an_edge_that_was_down_catches_up(gitops: GitOps) -> None:
    host = "us-edge-2"
    podman("exec", host, "systemctl", "stop", "cdnctl-nginx")
    try:
        gitops.write_new()
        (gitops.work / "tenants" / f"{NEW}.yaml").write_text(
            NEW_TENANT.format(origin=WORKING_ORIGIN).replace("1h", "2h")
        )
        commit = gitops.commit("customer-d caches for 2h, while us-edge-2 is down")
        record = gitops.outcome(commit)
        assert record["outcome"] == "applied", record
        assert record["edges"][host] == "unreachable", record["edges"]
    finally:
        podman("exec", host, "systemctl", "start", "cdnctl-nginx")
    wait_for(f"{host} on {commit[:12]}", lambda: gitops.running()[host]["commit"] == commit)
