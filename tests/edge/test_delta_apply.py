"""POST /config writes only what changed, checks the host index against unchanged tenants,
accepts any JSON layout, and leaves everything as it was when a write fails; POST
/config/delta applies a delta only over its base and only when it reaches its target."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.format import canonical_json, manifest_bytes, sha256_tag
from cdnctl.bundle.synthetic import bundle_bytes, make_bundle, tenant
from cdnctl.lab.sample_origin import body_for


def served_by(node, host: str, path: str = "/who") -> str | None:
    """Which sample origin answered, or None for a 404."""
    response = node.get(host, path)
    if response.status_code == 404:
        return None
    for name in ("a", "b", "c"):
        if response.content == body_for(name, path, 1024):
            return name
    raise AssertionError(f"{host}{path}: unexpected body {response.content[:60]!r}")


def test_only_changed_tenants_are_counted_and_removed_ones_go(edge, make_origin):
    origins = {name: make_origin(name) for name in "abc"}
    tenants = {n: tenant(n, [f"{n}.test"], origins[n].address) for n in "abc"}
    first = edge.apply(make_bundle(*tenants.values())).json()
    assert (first["tenants"], first["changed"], first["removed"]) == (3, 3, 0)
    tenants["b"] = tenant("b", ["b.test"], origins["b"].address, default_ttl=60)
    second = edge.apply(make_bundle(*tenants.values())).json()
    assert (second["tenants"], second["changed"], second["removed"]) == (3, 1, 0)
    assert edge.apply(make_bundle(tenants["a"], tenants["b"])).json()["removed"] == 1
    assert [served_by(edge, f"{n}.test", "/one") for n in "abc"] == ["a", "b", None]
    same = edge.apply(make_bundle(tenants["a"], tenants["b"])).json()
    assert (same["changed"], same["removed"]) == (0, 0)


def test_domains_move_between_tenants_in_one_apply(edge, make_origin):
    a, b = make_origin("a"), make_origin("b")
    edge.apply(
        make_bundle(
            tenant("a", ["a.test", "x.test", "*.w.test"], a.address),
            tenant("b", ["b.test"], b.address),
        )
    ).raise_for_status()
    assert [served_by(edge, h, "/1") for h in ("x.test", "any.w.test")] == ["a", "a"]
    edge.apply(
        make_bundle(
            tenant("a", ["a.test"], a.address),
            tenant("b", ["b.test", "x.test", "*.w.test"], b.address),
        )
    ).raise_for_status()
    assert [served_by(edge, h, "/2") for h in ("x.test", "any.w.test", "a.test")] == [
        "b",
        "b",
        "a",
    ]
    edge.apply(
        make_bundle(tenant("a", ["a.test"], a.address), tenant("b", ["b.test"], b.address))
    ).raise_for_status()
    assert served_by(edge, "x.test", "/3") is None
    assert served_by(edge, "any.w.test", "/3") is None


def test_host_index_is_checked_against_unchanged_tenants(edge, make_origin):
    a, b = make_origin("a"), make_origin("b")
    good = make_bundle(tenant("a", ["a.test"], a.address), tenant("b", ["b.test"], b.address))
    edge.apply(good).raise_for_status()
    stolen = json.loads(bundle_bytes(good))
    stolen["hosts"]["a.test"] = "b"  # b's domains do not list a.test, and b is unchanged
    response = edge.admin.post("/config", content=bundle_bytes(stolen))
    assert response.status_code == 400
    assert "a.test maps to tenant b, whose domains do not list it" in response.json()["error"]
    dropped = json.loads(bundle_bytes(good))
    del dropped["hosts"]["b.test"]
    response = edge.admin.post("/config", content=bundle_bytes(dropped))
    assert response.status_code == 400
    assert "b.test of tenant b is missing" in response.json()["error"]
    assert edge.admin.get("/config").json()["version"] == good["version"]
    assert [served_by(edge, h) for h in ("a.test", "b.test")] == ["a", "b"]


def test_any_json_layout_is_accepted(edge, make_origin):
    a = make_origin("a")
    bundle = make_bundle(tenant("a", ["a.test"], a.address))
    for body in (canonical_json(bundle), json.dumps(bundle, indent=2).encode()):
        response = edge.admin.post("/config", content=body)
        assert response.status_code == 200, response.text
        assert response.json()["version"] == bundle["version"]
        assert served_by(edge, "a.test") == "a"


def test_broken_line_layout_is_rejected_and_nothing_changes(edge, make_origin):
    a, b = make_origin("a"), make_origin("b")
    good = make_bundle(tenant("a", ["a.test"], a.address))
    edge.apply(good).raise_for_status()
    two = bundle_bytes(
        make_bundle(tenant("a", ["a.test"], a.address), tenant("b", ["b.test"], b.address))
    )
    lines = two.split(b"\n")
    no_comma = b"\n".join([lines[0], lines[1].rstrip(b","), *lines[2:]])
    duplicate = b"\n".join([lines[0], lines[1], lines[1], *lines[2:]])
    bad_text = two.replace(b'"b":{"cache"', b'"b":{"cache":,')
    for body, message in (
        (no_comma, "missing comma after tenant a"),
        (duplicate, "duplicate id a"),
        (bad_text, "tenant b: invalid JSON"),
    ):
        response = edge.admin.post("/config", content=body)
        assert response.status_code == 400, body
        assert message in response.json()["error"]
    assert edge.admin.get("/config").json()["version"] == good["version"]
    assert served_by(edge, "a.test") == "a"
    assert served_by(edge, "b.test") is None


def test_full_config_dict_rolls_everything_back(make_node, make_origin):
    a = make_origin("a")
    node = make_node("small", config_dict_size="64k")
    good = make_bundle(tenant("a", ["a.test"], a.address))
    node.apply(good).raise_for_status()
    state = node.edge.settings.effective_state_dir / "bundle.json"
    persisted = state.read_bytes()
    big = make_bundle(
        tenant("a", ["a.test"], a.address, default_ttl=60),
        *(tenant(f"t{i}", [f"t{i}.test"], a.address) for i in range(300)),
    )
    response = node.apply(big)
    assert response.status_code == 500
    assert "config dict" in response.json()["error"]
    assert node.admin.get("/config").json()["version"] == good["version"]
    assert state.read_bytes() == persisted
    assert served_by(node, "t1.test") is None
    assert served_by(node, "a.test") == "a"
    again = node.apply(make_bundle(tenant("a", ["a.test"], a.address, default_ttl=60)))
    assert again.json()["changed"] == 1  # a's old text was restored by the rollback


def test_a_bundle_persisted_by_an_older_cdnctl_is_served(make_node, make_origin, tmp_path: Path):
    a = make_origin("a")
    bundle = make_bundle(tenant("a", ["a.test"], a.address))
    state = tmp_path / "old" / "state"
    state.mkdir(parents=True)
    legacy = {"commit": "0ld", "applied_at": 1.5, "bundle": bundle}
    (state / "bundle.json").write_bytes(canonical_json(legacy))
    os.chmod(state / "bundle.json", 0o600)
    node = make_node("old")
    config = node.admin.get("/config").json()
    assert (config["version"], config["commit"]) == (bundle["version"], "0ld")
    assert served_by(node, "a.test") == "a"


def test_a_rotated_secret_is_applied_though_the_digest_is_the_same(edge, make_origin):
    a = make_origin("a")
    bundle = make_bundle(tenant("a", ["a.test"], a.address, basic_auth=("cdn", "old")))
    edge.apply(bundle).raise_for_status()
    rotated = json.loads(bundle_bytes(bundle))
    rotated["tenants"]["a"]["origin"]["basic_auth"]["authorization"] = "Basic Y2RuOm5ldw=="
    response = edge.admin.post("/config", content=bundle_bytes(rotated))
    assert (response.json()["version"], response.json()["changed"]) == (bundle["version"], 1)


def lua_heap_bytes(node) -> float:
    for line in node.metrics().splitlines():
        if line.startswith('cdn_lua_memory_bytes{worker="0"}'):
            return float(line.split()[-1])
    raise AssertionError("no cdn_lua_memory_bytes for worker 0")


def test_an_applied_bundle_is_garbage_once_the_apply_is_done(make_node, make_origin):
    """The worker that applied a bundle keeps a compact digest of it, not the body or its
    tenant ids. (JIT traces of closures made per apply kept the last bodies alive, 200 MB
    at 100k tenants, and a string table sized for their ids slowed every request.)"""
    node = make_node(workers=1)
    origin = make_origin("a")
    tenants = [tenant(f"t{i}", [f"t{i}.test"], origin.address) for i in range(20_000)]
    body = bundle_bytes(make_bundle(*tenants))
    for changed in (None, 7):  # all new, then one changed: both run hot (traced) loops
        if changed is not None:
            tenants[changed] = tenant(f"t{changed}", [f"t{changed}.test"], origin.address,
                                      default_ttl=60)  # fmt: skip
            body = bundle_bytes(make_bundle(*tenants))
        answer = node.admin.post("/config", content=body)
        assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 15  # the worker collects in steps, then reports each second
    while (heap := lua_heap_bytes(node)) > len(body) / 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert heap < len(body) / 2, f"worker 0 holds {heap / 2**20:.1f} MiB of Lua heap"
    assert node.get("t19999.test", "/x").status_code == 200


# Deltas (POST /config/delta): base + delta must give exactly what the full bundle gives.


def delta_of(base: dict, target: dict) -> bytes:
    """The delta from `base` to `target` (synthetic bundles are already resolved)."""
    return make_delta(
        bundle_bytes(target), manifest_bytes(target), manifest_bytes(base), base["version"]
    ).body


def running_state(node, hosts: list[str]) -> tuple:
    config = node.admin.get("/config").json()
    return (
        {key: config[key] for key in ("version", "content", "tenants")},
        node.admin.get("/config/tenants").json(),
        {host: served_by(node, host, "/state") for host in hosts},
    )


def test_a_delta_gives_exactly_what_the_full_bundle_gives(make_node, make_origin):
    origins = {name: make_origin(name) for name in "abc"}
    a, b, c = (origins[n].address for n in "abc")
    base = make_bundle(
        tenant("a", ["a.test", "x.test"], a),
        tenant("b", ["b.test", "*.w.test"], b),
        tenant("gone", ["gone.test"], c),
        *(tenant(f"t{i}", [f"t{i}.test"], a) for i in range(20)),
    )
    target = make_bundle(
        tenant("a", ["a.test"], a, default_ttl=60),  # changed, drops x.test
        tenant("b", ["b.test", "x.test"], b),  # takes x.test, drops *.w.test
        tenant("c", ["c.test", "*.w.test"], c),  # new, takes *.w.test
        *(tenant(f"t{i}", [f"t{i}.test"], a) for i in range(20)),
    )
    hosts = ["a.test", "b.test", "c.test", "x.test", "any.w.test", "gone.test", "t7.test"]
    full, by_delta = make_node("full"), make_node("delta")
    full.apply(target).raise_for_status()
    by_delta.apply(base).raise_for_status()
    body = delta_of(base, target)
    assert len(body) < len(bundle_bytes(target)) / 4
    answer = by_delta.admin.post("/config/delta", content=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "version": target["version"],
        "previous": base["version"],
        "tenants": 23,
        "changed": 3,
        "removed": 1,
        "delta": True,
    }
    assert running_state(by_delta, hosts) == running_state(full, hosts)
    for node in (full, by_delta):  # what a delta is made against, for any controller
        manifest = node.admin.get("/config/manifest").content
        assert (manifest, sha256_tag(manifest)) == (manifest_bytes(target), target["version"])
    assert [served_by(by_delta, h, "/s") for h in ("x.test", "any.w.test", "gone.test")] == [
        "b",
        "c",
        None,
    ]
    # A full apply over the delta's result sees nothing changed: same texts, same index.
    again = by_delta.apply(target).json()
    assert (again["changed"], again["removed"]) == (0, 0)


def test_a_delta_against_another_base_is_refused_and_nothing_changes(edge, make_origin):
    a = make_origin("a").address
    one = make_bundle(tenant("a", ["a.test"], a))
    two = make_bundle(tenant("a", ["a.test"], a), tenant("b", ["b.test"], a))
    three = make_bundle(tenant("b", ["b.test"], a, default_ttl=5))
    edge.apply(one).raise_for_status()
    before = running_state(edge, ["a.test", "b.test"])
    response = edge.admin.post("/config/delta", content=delta_of(two, three))
    assert response.status_code == 409
    error = response.json()["error"]
    assert f"delta base {two['version']} is not the running version {one['version']}" in error
    assert running_state(edge, ["a.test", "b.test"]) == before
    full = edge.admin.post("/config/delta", content=bundle_bytes(two))
    assert full.status_code == 400
    assert "base: must be sha256" in full.json()["error"]
    posted_as_full = edge.admin.post("/config", content=delta_of(one, two))
    assert posted_as_full.status_code == 400
    assert "this is a delta" in posted_as_full.json()["error"]
    assert running_state(edge, ["a.test", "b.test"]) == before


def test_a_delta_that_does_not_reach_its_target_is_refused(edge, make_origin):
    a = make_origin("a").address
    one = make_bundle(tenant("a", ["a.test"], a))
    two = make_bundle(tenant("a", ["a.test"], a), tenant("b", ["b.test"], a))
    edge.apply(one).raise_for_status()
    before = running_state(edge, ["a.test", "b.test"])
    good = json.loads(delta_of(one, two))
    cases = []
    lying = json.loads(json.dumps(good))
    lying["tenants"]["b"]["digest"] = "sha256:" + "0" * 64  # not what the target says
    cases.append((lying, "not the delta's target"))
    stolen = json.loads(json.dumps(good))
    stolen["hosts"]["a.test"] = "b"  # b does not list a.test, and a is left alone
    cases.append((stolen, "a.test belongs to tenant a, which this delta neither changes"))
    unlisted = json.loads(json.dumps(good))
    del unlisted["hosts"]["b.test"]
    cases.append((unlisted, "domain b.test of tenant b maps to nil"))
    for document, message in cases:
        response = edge.admin.post("/config/delta", content=bundle_bytes(document))
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    assert running_state(edge, ["a.test", "b.test"]) == before


def test_a_delta_that_removes_a_tenant_purges_it(edge, make_origin):
    origin = make_origin("a")
    a = origin.address
    both = make_bundle(tenant("a", ["a.test"], a), tenant("b", ["b.test"], a))
    edge.apply(both).raise_for_status()
    assert edge.get("b.test", "/cached").headers["X-Cache-Status"] == "MISS"
    assert edge.get("b.test", "/cached").headers["X-Cache-Status"] == "HIT"
    only_a = make_bundle(tenant("a", ["a.test"], a))
    answer = edge.admin.post("/config/delta", content=delta_of(both, only_a))
    assert answer.json()["removed"] == 1, answer.text
    assert served_by(edge, "b.test") is None
    answer = edge.admin.post("/config/delta", content=delta_of(only_a, both))
    assert answer.status_code == 200, answer.text
    assert edge.get("b.test", "/cached").headers["X-Cache-Status"] == "MISS"


def test_deltas_are_persisted_and_replayed_on_start(make_node, make_origin, tmp_path: Path):
    a = make_origin("a").address
    bundles = [
        make_bundle(*(tenant(f"t{i}", [f"t{i}.test"], a, default_ttl=60 + n) for i in range(n)))
        for n in (1, 2, 3)
    ]
    node = make_node("persist", workers=1)
    node.apply(bundles[0]).raise_for_status()
    for base, target in itertools.pairwise(bundles):
        node.admin.post("/config/delta", content=delta_of(base, target)).raise_for_status()
    hosts = ["t0.test", "t1.test", "t2.test"]
    before = running_state(node, hosts)
    node.edge.stop()
    node.edge.start()
    assert running_state(node, hosts) == before
    assert before[0]["version"] == bundles[2]["version"]


def test_deltas_over_a_manifest_of_many_pieces_reach_exactly_their_targets(make_node, make_origin):
    """The edge keeps a large manifest in pieces of about 64 KiB (manifest_store.lua): deltas
    that change one tenant mid-way, empty whole pieces, grow one past twice its size, and
    add keys before the first and after the last each give exactly the target's manifest,
    and a full bundle after them still drops what it no longer lists."""
    a = make_origin("a").address

    def host_of(tenant_id: str) -> str:
        return f"{tenant_id}.zone-{len(tenant_id) % 7}.example.test"

    def fleet(ids: list[str], ttl_of: dict[str, int] | None = None) -> dict:
        return make_bundle(
            *(
                tenant(i, [host_of(i)], a,
                       default_ttl=(ttl_of or {}).get(i, 3600))
                for i in ids
            )
        )  # fmt: skip

    ids = sorted(f"t{n}" for n in range(4000))  # tenants member ~330 KB, hosts ~190 KB
    middle = ids[1500:3000]  # more than a piece of either member, in sorted order
    steps = [
        fleet(ids),
        fleet(ids, {ids[2222]: 60}),  # one digest mid-way
        fleet([i for i in ids if i not in middle]),  # whole pieces emptied
        fleet(ids + [f"{i}x" for i in middle]),  # back, and one range grows past 2 pieces
        fleet(["a0", *ids, "z9"]),  # keys before the first and after the last
    ]
    node = make_node("pieces", workers=1)
    node.apply(steps[0]).raise_for_status()
    for base, target in itertools.pairwise(steps):
        answer = node.admin.post("/config/delta", content=delta_of(base, target))
        assert answer.status_code == 200, answer.text
        manifest = node.admin.get("/config/manifest").content
        assert manifest == manifest_bytes(target)
        assert node.admin.get("/config/tenants").json() == {
            "version": target["version"],
            "tenants": {i: t["digest"] for i, t in target["tenants"].items()},
        }
    final = steps[-1]
    for tenant_id in ("a0", "z9", ids[2000]):
        assert served_by(node, host_of(tenant_id)) == "a", tenant_id
    assert served_by(node, host_of(f"{middle[0]}x")) is None
    # A full bundle after the deltas: the running index comes from the pieces.
    last = fleet(ids[:100])
    answer = node.apply(last).json()
    assert (answer["changed"], answer["removed"]) == (0, len(final["tenants"]) - 100)
    assert served_by(node, host_of("z9")) is None
    assert served_by(node, host_of(ids[5])) == "a"
    assert node.admin.get("/config/manifest").content == manifest_bytes(last)
