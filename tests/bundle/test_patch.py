"""Patching the last bundle: finding a tenant's line and manifest member by bisection."""

from __future__ import annotations

import random

from cdnctl.bundle.bundle_bytes import find_sorted, tenants_open


def test_find_sorted_finds_what_a_plain_find_finds():
    """In bundle-like lines and manifest-like members (long enough to bisect), present and
    absent ids, the first and the last record."""
    rng = random.Random(3)
    for _ in range(300):
        suffixes = ["", "-a", "b"]
        ids = sorted({f"t{rng.randint(0, 5000):05d}{rng.choice(suffixes)}" for _ in range(400)})
        pad = "x" * rng.randint(0, 40)
        lines = ",".join(f'\n"{i}":{{"id":"{i}","p":"{pad}"}}' for i in ids)
        bundle = ('{"format":1,"hosts":{},"tenants":{' + lines + '\n},"version":"v"}').encode()
        members = ",".join(f'"{i}":"sha256:{i}"' for i in ids)
        manifest = ('{"format":1,"hosts":{},"tenants":{' + members + '},"wildcards":{}}').encode()
        lo, hi = bundle.find(b"{\n") + 1, bundle.rfind(b"\n}")
        mlo, mhi = manifest.find(b'"tenants":{') + 10, manifest.find(b'},"wildcards":')
        keys = [ids[0], ids[-1], *rng.sample(ids, 3), "t", "t99999", "a", "t0000"]
        for key in (k.encode() for k in keys):
            assert find_sorted(bundle, b"\n", key, lo, hi) == bundle.find(b'\n"' + key + b'":{')
            at = manifest.find(b'"' + key + b'":"', mlo)
            assert find_sorted(manifest, b",", key, mlo, mhi) == (at - 1 if at >= 0 else -1)


def test_tenants_open_is_where_the_tenants_map_opens():
    """Past a hosts map, in a bundle and in a manifest; in another member order, found by a
    search instead."""
    hosts = ",".join(f'"h{i}.test":"t{i}"' for i in range(200))
    for text in (
        '{"format":1,"hosts":{' + hosts + '},"tenants":{\n"t1":{"a":{"b":1}}\n},"version":"v"}',
        '{"format":1,"hosts":{' + hosts + '},"tenants":{"t1":"sha256:x"},"wildcards":{}}',
        '{"format":1,"hosts":{},"tenants":{},"wildcards":{}}',
        '{"format":1,"other":{"x":{}},"tenants":{"t1":"d"},"hosts":{}}',
    ):
        data = text.encode()
        assert tenants_open(data) == data.find(b',"tenants":{') + len(b',"tenants":{') - 1
        assert data[tenants_open(data)] == ord("{")
    assert tenants_open(b'{"format":1,"hosts":{}}') == -1
