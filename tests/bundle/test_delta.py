"""Deltas between compiled bundles: exactly the difference, secrets included, and the
content a full apply of the target would report."""

from __future__ import annotations

import json
import os
import time

import pytest

from cdnctl.bundle.compile import compile_paths
from cdnctl.bundle.delta import (
    DeltaError,
    _decoded_changes,
    _manifest_changes,
    make_delta,
    resolved_bundle,
)
from cdnctl.bundle.format import bundle_json, canonical_json, sha256_tag
from cdnctl.bundle.manifest_store import KEEP, ManifestStore
from cdnctl.bundle.secrets import resolve_secrets
from cdnctl.tenants.policy import Policy

BASIC_AUTH = {"username": "u", "password_env": "B_PASSWORD"}
ENVIRON = {"B_PASSWORD": "s3cret", "C_TOKEN": "tok"}


def resolver(environ):
    return lambda bundle: resolve_secrets(bundle, environ)


def applied(base: dict, delta: dict) -> dict:
    """What an edge running `base` runs after `delta` (the edge's rules, on plain dicts)."""
    result = json.loads(json.dumps(base))
    for tenant in delta["removed"]:
        del result["tenants"][tenant]
    result["tenants"].update(delta["tenants"])
    for kind in ("hosts", "wildcards"):
        for host, tenant in delta[kind].items():
            if tenant is None:
                del result[kind][host]
            else:
                result[kind][host] = tenant
    result["version"] = delta["version"]
    return result


def compile_now(tenants_dir, cache):
    old = time.time() - 60
    for path in tenants_dir.iterdir():
        os.utime(path, (old, old))
    result = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert result.ok, [p.render() for p in result.problems]
    return result


def test_deltas_through_a_series_of_commits_rebuild_each_bundle(
    tmp_path, write_tenant, tenants_dir
):
    cache = tmp_path / "cache"
    secret = {"url": "https://origin.b.test", "basic_auth": BASIC_AUTH}
    steps = [
        lambda: [write_tenant(f"t{i}") for i in range(6)] + [write_tenant("b", origin=secret)],
        lambda: write_tenant("t1", cache={"default_ttl": 5}),
        lambda: write_tenant("t2", domains=["cdn.t2.test", "*.img.t2.test"]),
        lambda: write_tenant("c", purge_tokens_env=["C_TOKEN"]),
        lambda: (tenants_dir / "t0.yaml").unlink(),
        lambda: (write_tenant("t3", domains=["cdn.t3.test", "x.test"]),),
        lambda: (write_tenant("t3"), write_tenant("t4", domains=["cdn.t4.test", "x.test"])),
    ]
    previous = None
    for step in steps:
        step()
        result = compile_now(tenants_dir, cache)
        full = json.loads(result.bundle)
        store = ManifestStore(cache)
        assert store.load(result.version) == result.manifest
        if previous is not None:
            delta = make_delta(
                result.bundle, result.manifest, store.load(previous.version), previous.version
            )
            document = json.loads(delta.body)
            assert applied(json.loads(previous.bundle), document) == full
            assert delta.content == sha256_tag(result.bundle)
            # Resolved: the full bundle's content, and every tenant with a secret is sent.
            resolved = make_delta(
                result.bundle,
                result.manifest,
                previous.manifest,
                previous.version,
                resolver=resolver(ENVIRON),
            )
            full_resolved = bundle_json(resolve_secrets(full, ENVIRON))
            assert resolved.content == sha256_tag(full_resolved)
            assert resolved_bundle(result.bundle, resolver(ENVIRON)) == full_resolved
            rebuilt = applied(
                resolve_secrets(json.loads(previous.bundle), ENVIRON), json.loads(resolved.body)
            )
            assert bundle_json(rebuilt) == full_resolved
            assert "b" in json.loads(resolved.body)["tenants"]
        previous = result


def test_a_rotated_secret_is_in_the_delta_to_the_same_version(write_tenant, tenants_dir):
    secret = {"url": "https://origin.b.test", "basic_auth": BASIC_AUTH}
    write_tenant("a")
    write_tenant("b", origin=secret)
    result = compile_paths([tenants_dir], Policy())
    before = make_delta(result.bundle, result.manifest, result.manifest, result.version,
                        resolver=resolver(ENVIRON))  # fmt: skip
    rotated = make_delta(result.bundle, result.manifest, result.manifest, result.version,
                         resolver=resolver({**ENVIRON, "B_PASSWORD": "new"}))  # fmt: skip
    document = json.loads(rotated.body)
    assert sorted(document["tenants"]) == ["b"]
    assert (document["removed"], document["hosts"], document["wildcards"]) == ([], {}, {})
    assert rotated.content != before.content
    assert rotated.base == rotated.version == result.version


def test_a_manifest_of_another_version_is_refused(write_tenant, tenants_dir):
    write_tenant("a")
    result = compile_paths([tenants_dir], Policy())
    with pytest.raises(DeltaError, match="is not that version's"):
        make_delta(result.bundle, result.manifest, result.manifest, "sha256:" + "0" * 64)


def test_the_store_keeps_the_newest_manifests_and_checks_them(tmp_path):
    store = ManifestStore(tmp_path)
    manifests = [json.dumps({"n": n}).encode() for n in range(KEEP + 2)]
    for manifest in manifests:
        store.save(sha256_tag(manifest), manifest)
        time.sleep(0.01)
    assert store.load(sha256_tag(manifests[0])) is None
    assert store.load(sha256_tag(manifests[-1])) == manifests[-1]
    assert len(list(store.directory.glob("*.json"))) == KEEP
    path = store.directory / (sha256_tag(manifests[-1]).removeprefix("sha256:") + ".json")
    path.write_bytes(b"{}")  # tampered with: not that version any more
    assert store.load(sha256_tag(manifests[-1])) is None
    assert store.load("../../etc/passwd") is None


def _manifest(tenants: dict, hosts: dict, wildcards: dict | None = None) -> bytes:
    doc = {"format": 1, "hosts": hosts, "tenants": tenants, "wildcards": wildcards or {}}
    return canonical_json(doc)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # one digest changes, one tenant goes, one comes, hosts move
        (
            ({"a": "sha256:1", "b": "sha256:2", "c": "sha256:3"}, {"a.t": "a", "b.t": "b"}),
            ({"a": "sha256:9", "c": "sha256:3", "d": "sha256:4"}, {"a.t": "a", "d.t": "d"}),
        ),
        # from and to nothing
        (({}, {}), ({"a": "sha256:1"}, {"a.t": "a"})),
        (({"a": "sha256:1"}, {"a.t": "a"}), ({}, {})),
        # escapes and nulls: not the plain layout, decoded instead
        (({'q"x': "sha256:1"}, {"a,b": 'q"x'}), ({'q"x': "sha256:2"}, {})),
        (({"a": None, "b": "sha256:2"}, {}), ({"a": "sha256:1", "b": "sha256:2"}, {})),
        (({"a,b": "sha256:1", "c": "sha256:1"}, {}), ({"a,b": "sha256:2"}, {"x": "a,b"})),
    ],
)
def test_manifest_changes_without_decoding_equal_the_decoded_ones(before, after):
    old, new = _manifest(*before), _manifest(*after)
    fast = _manifest_changes(old, new)
    decoded = _decoded_changes(old, new)
    assert fast is None or fast == decoded
    plain = b"\\" not in old + new and b"null" not in old + new
    assert (fast is not None) == plain


def test_the_resolved_bundle_decodes_only_its_tenants_with_secrets(write_tenant, tenants_dir):
    """The bundle as sent is the decoded bundle resolved, with secrets first, in the middle
    and last, and for lines of another shape (read one by one then); only the tenants with
    secrets reach the resolver."""
    write_tenant("a", origin={"url": "https://origin.a.test", "basic_auth": BASIC_AUTH})
    write_tenant("m")
    write_tenant("n", purge_tokens_env=["C_TOKEN"])
    write_tenant("z", purge_tokens_env=["C_TOKEN"])
    bundle = compile_paths([tenants_dir], Policy()).bundle
    expected = bundle_json(resolve_secrets(json.loads(bundle), ENVIRON))
    seen: list[list[str]] = []

    def recording(document):
        seen.append(sorted(document["tenants"]))
        return resolve_secrets(document, ENVIRON)

    assert resolved_bundle(bundle, recording) == expected
    assert seen == [["a", "n", "z"]]
    # A line without `basic_auth` (not as cdnctl compiles): every line is read.
    odd = bundle.replace(b'"basic_auth":null,', b"", 1)
    assert odd != bundle
    assert resolved_bundle(odd, recording) == bundle_json(resolve_secrets(json.loads(odd), ENVIRON))
    assert seen[-1] == ["a", "m", "n", "z"]
