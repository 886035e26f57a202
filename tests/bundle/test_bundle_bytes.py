"""A bundle's bytes as the cache's file plus patches: what reads it through them sees
exactly the joined bytes."""

from __future__ import annotations

import hashlib
import io
import json
import mmap

from cdnctl.bundle.bundle_bytes import BundleBytes
from cdnctl.bundle.format import bundle_json, sha256_tag


def _bundle(tenants: int, pad: int) -> bytes:
    document = {
        "format": 1,
        "hosts": {f"cdn.t{i:05d}.test": f"t{i:05d}" for i in range(tenants)},
        "tenants": {f"t{i:05d}": {"id": f"t{i:05d}", "pad": "x" * pad} for i in range(tenants)},
        "version": "sha256:" + "0" * 64,
        "wildcards": {},
    }
    return bundle_json(document)


def _patched(data: bytes) -> tuple[BundleBytes, bytes]:
    """Three tenant lines (the first, one inside, the last) and the version replaced."""
    patches, joined, at = [], [], 0
    starts = [data.find(b'\n"' + tenant + b'":') for tenant in (b"t00000", b"t00417", b"t00999")]
    for number, start in enumerate(starts):
        end = data.find(b"\n", start + 1)
        old = data[start:end]
        comma = b"," if old.endswith(b",") else b""
        tenant = old[2 : old.index(b'":')]
        new = b'\n"' + tenant + b'":' + json.dumps({"new": number}).encode() + comma
        patches.append((start, end, new))
    version_at = data.rfind(b'"version":"') + len(b'"version":"')
    patches.append((version_at, version_at + 71, ("sha256:" + "f" * 64).encode()))
    for start, end, text in patches:
        joined += [data[at:start], text]
        at = end
    joined.append(data[at:])
    return BundleBytes(data, patches), b"".join(joined)


def test_patched_bytes_read_as_the_joined_bundle(tmp_path):
    data = _bundle(1000, 1100)  # over a megabyte: written while hashed in another thread
    path = tmp_path / "bundle"
    path.write_bytes(data)
    with path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    for base in (data, mapped):
        view, joined = _patched(base)
        assert len(view) == len(joined) and view.tobytes() == joined
        assert view.version() == "sha256:" + "f" * 64
        for tenant in ("t00000", "t00001", "t00417", "t00998", "t00999"):
            line_at = joined.find(b'\n"' + tenant.encode() + b'":')
            line = joined[line_at : joined.find(b"\n", line_at + 1)]
            assert view.fragment(tenant) == line[len(tenant) + 4 :].removesuffix(b",")
        assert view.fragment("t01000") is None and view.fragment("a") is None
        out = io.BytesIO()
        view.write_to(out)
        assert out.getvalue() == joined
        assert view.sha256_tag() == sha256_tag(joined)
        assert BundleBytes(base).sha256_tag() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_bundle_without_its_line_layout_has_no_fragments():
    view = BundleBytes(json.dumps({"format": 1, "hosts": {}, "tenants": {"t1": {}}}).encode())
    assert view.fragment("t1") is None and view.version() is None
