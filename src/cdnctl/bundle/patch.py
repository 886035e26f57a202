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

from cdnctl.bundle.bundle_bytes import BundleBytes, Span, digest_at, pieces, tenant_members
from cdnctl.bundle.compile_cache import BundleRecord
from cdnctl.bundle.format import sha256_tag
from cdnctl.tenants.validate import FileResult

MAX_FILES = 64  # beyond this many edited files, a full assemble is as quick
MAX_PATCH_BYTES = 256 * 1024  # replaced text kept beside the bundle file before a new one
_DIGEST = len("sha256:") + 64


@dataclass(frozen=True)
class Patched:
    patches: tuple[Span, ...]  # for the new BundleRecord, over the same file
    manifest: bytes
    version: str

    @property
    def patch_bytes(self) -> int:
        return sum(len(text) for _, _, text in self.patches)


def patch_bundle(
    data: mmap.mmap | bytes, record: BundleRecord, manifest: bytes, edited: Sequence[FileResult]
) -> Patched | None:
    """The last bundle (`data` patched as `record` says; `manifest` its manifest) with the
    lines of the `edited` tenants (valid results) replaced, or None when one of them is
    not a tenant of it or claims other domains than it did."""
    last = BundleBytes(data, record.patches)
    spans = {start: (end, text) for start, end, text in record.patches}
    digests: dict[int, bytes] = {}  # where in the manifest -> the new digest
    members = tenant_members(manifest)
    if members is None:
        return None
    for result in edited:
        tenant = result.tenant_id or ""
        if result.fragment is None or result.digest is None or len(result.digest) != _DIGEST:
            return None
        found = last.line(tenant)
        if found is None:
            return None  # not in this bundle: an added tenant
        start, end, old_line = found
        comma = old_line.endswith(b",")
        old_fragment = old_line[len(tenant) + 4 : len(old_line) - comma]
        domains = sorted(set(result.domains))
        if len(domains) != len(result.domains) or json.loads(old_fragment)["domains"] != domains:
            return None  # the fleet check and the host indexes would change
        new_line = b'\n"' + tenant.encode() + b'":' + bytes(result.fragment) + b"," * comma
        spans[start] = (end, new_line)
        at = digest_at(manifest, members, tenant)
        if at < 0:
            return None
        digests[at] = result.digest.encode()
    manifest_bytes = b"".join(
        pieces(manifest, [(at, at + _DIGEST, d) for at, d in sorted(digests.items())])
    )
    version = sha256_tag(manifest_bytes)
    version_at = last.version_at()
    if version_at < 0:
        return None
    spans[version_at] = (version_at + len(version), version.encode())
    patches = tuple((start, end, text) for start, (end, text) in sorted(spans.items()))
    return Patched(patches, manifest_bytes, version)
