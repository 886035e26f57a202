"""A compile of a few edited tenant files as a patch of the last bundle.

When git names the only tenant files that can differ from what the last compile read
(git_changes.py) and the compile cache keeps the bundle that compile assembled (its
BundleRecord: a file plus the spans replaced since), a commit that edits a few tenants'
settings need not read 100k cached results: the new bundle is the last one with those
tenants' lines replaced (format.py: one tenant per line, in id order) and its manifest the
last one with their digests replaced, the same bytes a full assemble gives. Only when every
named file is a tenant of that bundle, valid, with the same id and the same domains (then
the fleet check and the host indexes are what they were); anything else (a file added,
removed or renamed, a domain changed, a problem) is left to the full compile.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Sequence
from dataclasses import dataclass

from cdnctl.bundle.compile_cache import BundleRecord
from cdnctl.bundle.format import sha256_tag
from cdnctl.tenants.validate import FileResult

MAX_FILES = 64  # beyond this many edited files, a full assemble is as quick
MAX_PATCH_BYTES = 256 * 1024  # replaced text kept beside the bundle file before a new one
_VERSION = b',"version":"'
_TENANTS = b',"tenants":{'
_DIGEST = len("sha256:") + 64

Span = tuple[int, int, bytes]  # (start, end, text): file bytes [start, end) read as text


@dataclass(frozen=True)
class Patched:
    patches: tuple[Span, ...]  # for the new BundleRecord, over the same file
    manifest: bytes
    version: str

    @property
    def patch_bytes(self) -> int:
        return sum(len(text) for _, _, text in self.patches)


def pieces(data: mmap.mmap | bytes, patches: Sequence[Span]) -> list[bytes | memoryview]:
    """The bundle a file with these patches reads as, in pieces (for b"".join or hashing)."""
    view = memoryview(data)
    out: list[bytes | memoryview] = []
    at = 0
    for start, end, text in patches:
        out.append(view[at:start])
        out.append(text)
        at = end
    out.append(view[at:])
    return out


_HOSTS_OPEN = b'"hosts":{'


def tenants_open(data: mmap.mmap | bytes) -> int:
    """Where the `{` that opens the tenants map of a bundle or a manifest is (format.py:
    `{"format":1,"hosts":{...},"tenants":{`), or -1. Found as the first `{` past the
    hosts map's, which holds none (names and ids only): a one-byte search, where a search
    for `"tenants":{` over 80 MB of hosts index at 1M tenants took 35-80 ms."""
    hosts = data.find(_HOSTS_OPEN, 0, 64)
    at = data.find(b"{", hosts + len(_HOSTS_OPEN)) if hosts >= 0 else -1
    if at < 0 or data[at - len(_TENANTS) + 1 : at + 1] != _TENANTS:
        at = data.find(_TENANTS)  # not that layout: search it
        return at + len(_TENANTS) - 1 if at >= 0 else -1
    return at


def find_sorted(data: mmap.mmap | bytes, separator: bytes, key: bytes, lo: int, hi: int) -> int:
    """Where `<separator>"<key>":` begins in data[lo:hi]: records that each begin with
    `<separator>"<key>":`, sorted by key, and no other `<separator>"` in them (a bundle's
    tenant lines; a manifest's tenant members, with data[lo] the `{` before the first). By
    bisection: a find over a gigabyte of bundle took 0.1-0.3 s per tenant. -1 when none."""
    marker, needle = separator + b'"', separator + b'"' + key + b'":'
    if data[lo : lo + len(separator)] != separator and (
        data[lo + 1 : lo + len(needle)] == needle[len(separator) :]
    ):
        return lo  # the first record, after a `{` instead of the separator
    while hi - lo > 4096:
        mid = (lo + hi) // 2
        start = data.find(marker, mid, hi)
        if start < 0:
            hi = mid
            continue
        end = data.find(b'"', start + len(marker))
        found = data[start + len(marker) : end]
        if found == key:
            return start if data[end : end + 2] == b'":' else -1
        if found < key:
            lo = start + 1
        else:
            hi = start
    return data.find(needle, lo, min(len(data), hi + len(needle)))


def patch_bundle(
    data: mmap.mmap | bytes, record: BundleRecord, manifest: bytes, edited: Sequence[FileResult]
) -> Patched | None:
    """The last bundle (`data` patched as `record` says; `manifest` its manifest) with the
    lines of the `edited` tenants (valid results) replaced, or None when one of them is
    not a tenant of it or claims other domains than it did."""
    spans = {start: (end, text) for start, end, text in record.patches}
    digests: dict[int, bytes] = {}  # where in the manifest -> the new digest
    members_from = tenants_open(manifest)
    members_to = manifest.rfind(b'},"wildcards":')  # (the last map, the shortest)
    lines_from, lines_to = tenants_open(data), data.rfind(b"\n}")
    if members_from < 0 or members_to < members_from or lines_from < 0 or lines_to < 0:
        return None
    for result in edited:
        tenant = (result.tenant_id or "").encode()
        if result.fragment is None or result.digest is None or len(result.digest) != _DIGEST:
            return None
        start = find_sorted(data, b"\n", tenant, lines_from + 1, lines_to)
        if start < 0:
            return None  # not in this bundle: an added tenant
        end = data.find(b"\n", start + 1)
        old_line = spans[start][1] if start in spans else bytes(data[start:end])
        comma = old_line.endswith(b",")
        old_fragment = old_line[len(tenant) + 4 : len(old_line) - comma]
        domains = sorted(set(result.domains))
        if len(domains) != len(result.domains) or json.loads(old_fragment)["domains"] != domains:
            return None  # the fleet check and the host indexes would change
        new_line = b'\n"' + tenant + b'":' + bytes(result.fragment) + b"," * comma
        spans[start] = (end, new_line)
        at = find_sorted(manifest, b",", tenant, members_from, members_to)
        if at < 0:
            return None
        digests[at + len(tenant) + 5] = result.digest.encode()  # past ,"<id>":"
    manifest_bytes = b"".join(
        pieces(manifest, [(at, at + _DIGEST, d) for at, d in sorted(digests.items())])
    )
    version = sha256_tag(manifest_bytes)
    version_at = data.rfind(_VERSION)
    if version_at < 0:
        return None
    version_at += len(_VERSION)
    spans[version_at] = (version_at + len(version), version.encode())
    patches = tuple((start, end, text) for start, (end, text) in sorted(spans.items()))
    return Patched(patches, manifest_bytes, version)
