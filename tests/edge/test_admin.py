"""Admin API: auth, config apply/persist/swap without reload, metrics."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import threading
import time

import httpx
import pytest

import cdnctl.edge.runner as runner
from cdnctl.bundle.synthetic import bundle_bytes, make_bundle, tenant
from cdnctl.lab.sample_origin import body_for
from tests.edge.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration


def test_health_is_open_everything_else_needs_the_token(edge):
    health = httpx.get(f"{edge.edge.admin_url}/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "mode": "edge", "version": None}
    for method, path in (
        ("GET", "/config"),
        ("POST", "/config"),
        ("POST", "/config/delta"),
        ("GET", "/config/manifest"),
        ("GET", "/config/tenants"),
        ("GET", "/metrics"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}):
            response = httpx.request(method, f"{edge.edge.admin_url}{path}", headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"error": "unauthorized"}
    response = httpx.post(f"{edge.edge.admin_url}/purge", json={"tenant": "x", "all": True})
    assert response.status_code == 401


def test_apply_reports_versions_and_persists_0600(edge, make_origin):
    origin = make_origin("a")
    assert edge.admin.get("/config").json() == {
        "version": None,
        "content": None,
        "commit": None,
        "tenants": 0,
        "applied_at": None,
    }
    first = make_bundle(tenant("a", ["a.test"], origin.address))
    before = time.time()
    response = edge.apply(first, commit="abc123")
    assert response.status_code == 200
    assert response.json() == {
        "version": first["version"],
        "previous": None,
        "tenants": 1,
        "changed": 1,
        "removed": 0,
    }
    config = edge.admin.get("/config").json()
    assert config["version"] == first["version"]
    assert config["commit"] == "abc123"
    assert config["tenants"] == 1
    assert before - 1 <= config["applied_at"] <= time.time() + 1
    second = make_bundle(
        tenant("a", ["a.test"], origin.address), tenant("b", ["b.test"], origin.address)
    )
    response = edge.apply(second)
    assert response.json() == {
        "version": second["version"],
        "previous": first["version"],
        "tenants": 2,
        "changed": 1,
        "removed": 0,
    }
    assert edge.admin.get("/config").json()["commit"] is None
    health = httpx.get(f"{edge.edge.admin_url}/health").json()
    assert health["version"] == second["version"]
    state = edge.edge.settings.effective_state_dir / "bundle.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert state.read_bytes() == bundle_bytes(second)  # exactly what was applied
    content = edge.admin.get("/config").json()["content"]
    assert content == "sha256:" + hashlib.sha256(bundle_bytes(second)).hexdigest()
    meta = state.with_name("bundle.meta.json")
    assert stat.S_IMODE(meta.stat().st_mode) == 0o600
    assert json.loads(meta.read_text())["version"] == second["version"]
    assert ADMIN_TOKEN not in (edge.edge.prefix / "conf" / "nginx.conf").read_text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"format": 2}', "unsupported bundle format"),
        (b"[]", "format"),
    ],
)
def test_bad_config_is_rejected_and_old_one_keeps_serving(edge, make_origin, body, message):
    origin = make_origin("a")
    good = make_bundle(tenant("a", ["a.test"], origin.address))
    assert edge.apply(good).status_code == 200
    response = edge.admin.post("/config", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert edge.admin.get("/config").json()["version"] == good["version"]
    assert edge.get("a.test", "/x").status_code == 200


def test_inconsistent_hosts_index_and_unresolved_secrets_are_rejected(edge, make_origin):
    origin = make_origin("a")
    good = make_bundle(tenant("a", ["a.test"], origin.address))
    assert edge.apply(good).status_code == 200
    broken = make_bundle(tenant("b", ["b.test"], origin.address))
    broken["hosts"]["a.test"] = "nobody"
    response = edge.admin.post("/config", content=bundle_bytes(broken))
    assert response.status_code == 400
    assert "unknown tenant" in response.json()["error"]
    unresolved = make_bundle(tenant("b", ["b.test"], origin.address))
    unresolved["tenants"]["b"]["origin"]["basic_auth"] = {"username": "u", "password_env": "X"}
    response = edge.admin.post("/config", content=bundle_bytes(unresolved))
    assert response.status_code == 400
    assert "not resolved" in response.json()["error"]
    assert edge.admin.get("/config").json()["version"] == good["version"]
    assert edge.get("b.test", "/x").status_code == 404


def _altered(bundle, change):
    altered = json.loads(json.dumps(bundle))
    change(altered)
    return altered


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b.update(version="sha256:" + "0" * 64), id="version-zeroed"),
        pytest.param(lambda b: b["tenants"]["b"].update(digest="sha256:" + "1" * 64), id="digest"),
        pytest.param(lambda b: b["hosts"].update({"b2.test": "b"}), id="extra-host"),
        pytest.param(lambda b: b.update(format=1, extra="x"), id="extra-member"),
    ],
)
def test_a_bundle_whose_version_is_not_its_manifests_hash_is_refused(edge, make_origin, change):
    """The version is the SHA-256 of the manifest: an edge never runs (and then reports) a
    version its bundle does not have."""
    origin = make_origin("a")
    good = make_bundle(
        tenant("a", ["a.test"], origin.address), tenant("b", ["b.test"], origin.address)
    )
    assert edge.apply(good).status_code == 200
    for body in (bundle_bytes(_altered(good, change)), json.dumps(_altered(good, change))):
        response = edge.admin.post("/config", content=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "is not the SHA-256 of this bundle's manifest" in error or "b2.test" in error
    assert edge.admin.get("/config").json()["version"] == good["version"]
    assert edge.get("a.test", "/x").status_code == 200


def test_the_version_check_accepts_any_layout_and_key_order(edge, make_origin):
    origin = make_origin("a")
    bundle = make_bundle(
        tenant("b", ["b.test"], origin.address), tenant("a", ["a.test", "*.w.test"], origin.address)
    )
    shuffled = {key: bundle[key] for key in ("wildcards", "version", "tenants", "hosts", "format")}
    shuffled["tenants"] = dict(reversed(list(bundle["tenants"].items())))
    response = edge.admin.post("/config", content=json.dumps(shuffled, indent=1))
    assert response.status_code == 200, response.text
    assert edge.admin.get("/config").json()["version"] == bundle["version"]


def test_hot_apply_without_reload_and_without_failed_requests(edge, make_origin):
    origin = make_origin("h")
    bundle = make_bundle(tenant("h", ["h.test"], origin.address))
    assert edge.apply(bundle).status_code == 200
    master, workers = edge.edge.master_pid, edge.edge.worker_pids()
    assert len(workers) == 2
    failures: list[str] = []
    done = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal done
        with httpx.Client(base_url=edge.edge.base_url, timeout=5) as c:
            while not stop.is_set():
                response = c.get(f"/obj{done % 5}", headers={"Host": "h.test"})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:80]}")
                done += 1

    thread = threading.Thread(target=client)
    thread.start()
    try:
        for i in range(10):
            extra = [tenant(f"x{j}", [f"x{j}.test"], origin.address) for j in range(i * 50)]
            next_bundle = make_bundle(
                tenant("h", ["h.test"], origin.address, default_ttl=100 + i), *extra
            )
            assert edge.apply(next_bundle).status_code == 200
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert failures == []
    assert done > 20
    assert edge.edge.master_pid == master
    assert edge.edge.worker_pids() == workers
    assert edge.get("x449.test", "/y").status_code == 200


def test_restart_serves_the_persisted_bundle(make_node, make_origin):
    origin = make_origin("p")
    node = make_node("persist")
    bundle = make_bundle(tenant("p", ["p.test"], origin.address))
    assert node.apply(bundle, commit="c0ffee").status_code == 200
    node.close()
    node = make_node("persist", listen=node.address, admin_listen=node.edge.settings.admin_listen)
    config = node.admin.get("/config").json()
    assert config["version"] == bundle["version"]
    assert config["commit"] == "c0ffee"
    response = node.get("p.test", "/after-restart")
    assert response.content == body_for("p", "/after-restart", 1024)


def metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_move_as_expected(edge, make_origin):
    origin = make_origin("m")
    bundle = make_bundle(tenant("m", ["m.test"], origin.address))
    assert edge.apply(bundle).status_code == 200
    edge.get("m.test", "/1")
    edge.get("m.test", "/1")
    edge.get("m.test", "/1")
    edge.get("nobody.test", "/1")
    time.sleep(1.2)  # workers flush their counters to the shared dict every second
    text = edge.metrics()
    assert (
        metric(text, 'cdn_requests_total{tenant="m",status_class="2xx",cache_status="MISS"}') == 1
    )
    assert metric(text, 'cdn_requests_total{tenant="m",status_class="2xx",cache_status="HIT"}') == 2
    assert metric(text, 'cdn_requests_total{tenant="_unknown",status_class="4xx"') == 1
    assert metric(text, 'cdn_response_bytes_total{tenant="m"}') > 3 * 1024
    assert metric(text, 'cdn_origin_response_seconds_count{tenant="m"}') == 1
    assert metric(text, 'cdn_origin_response_seconds_bucket{tenant="m",le="+Inf"}') == 1
    assert metric(text, 'cdn_origin_response_seconds_bucket{tenant="m",le="10"}') == 1
    assert f'cdn_config_info{{version="{bundle["version"]}"}} 1' in text
    assert metric(text, "cdn_config_tenants") == 1
    edge.get("m.test", "/1")
    time.sleep(1.2)
    assert (
        metric(
            edge.metrics(), 'cdn_requests_total{tenant="m",status_class="2xx",cache_status="HIT"}'
        )
        == 3
    )


def test_the_shared_dicts_report_their_size_and_what_tenants_take(edge, make_origin):
    """cdn_shared_dict_*: an SRE sees the config dict fill before applies are refused."""
    origin = make_origin("d")
    config = 'cdn_shared_dict_{}_bytes{{dict="cdn_config"}}'
    empty = edge.metrics()
    assert metric(empty, config.format("capacity")) == 64 * 2**20  # NodeSettings' default
    assert metric(empty, 'cdn_shared_dict_capacity_bytes{dict="cdn_metrics"}') == 16 * 2**20
    tenants = [tenant(f"d{i}", [f"d{i}.test"], origin.address) for i in range(2000)]
    assert edge.apply(make_bundle(*tenants)).status_code == 200
    taken = metric(empty, config.format("free")) - metric(edge.metrics(), config.format("free"))
    assert 2000 * 512 < taken < 2000 * 8 * 1024, taken


def test_hup_reload_keeps_serving_the_running_bundle(edge, make_origin):
    origin = make_origin("r")
    bundle = make_bundle(tenant("r", ["r.test"], origin.address))
    assert edge.apply(bundle).status_code == 200
    before = edge.edge.worker_pids()
    os.kill(edge.edge.master_pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(edge.edge.worker_pids()) & set(before):
        time.sleep(0.1)
    assert edge.admin.get("/config").json()["version"] == bundle["version"]
    assert edge.get("r.test", "/after-hup").status_code == 200


def test_an_nginx_conf_without_the_apply_thread_pool_applies_inline(
    make_node, make_origin, monkeypatch
):
    """Applies run in the cdn_apply thread pool (store.lua); an nginx.conf rendered before
    it existed (or edited) has none, and its edge still applies, in the request."""
    render = runner.write_instance

    def without_pool(settings):
        render(settings)
        conf = settings.prefix / "conf" / "nginx.conf"
        text = conf.read_text()
        assert "thread_pool cdn_apply" in text
        conf.write_text(text.replace("thread_pool cdn_apply threads=1;", ""))

    monkeypatch.setattr(runner, "write_instance", without_pool)
    origin = make_origin("q")
    node = make_node("nopool", workers=1)
    first = make_bundle(tenant("q", ["q.test"], origin.address))
    assert node.apply(first).status_code == 200
    second = make_bundle(tenant("q", ["q.test"], origin.address, default_ttl=5))
    answer = node.apply(second)
    assert answer.status_code == 200
    assert answer.json()["changed"] == 1
    assert node.get("q.test", "/x").content == body_for("q", "/x", 1024)
