"""A bundle's bytes without joining them: a base (bytes, or the compile cache's mapped file)
with spans of it read as other text (bundle/patch.py).

At a million tenants a bundle is a gigabyte. A compile that patched the last bundle hands
out the cache's file and its patches instead of new bytes, and whatever reads the bundle
does so through them: writes it out (hashing it at the same time, on the other core),
looks up one tenant's line or the version (by bisection: tenant lines are sorted by id,
format.py), or hashes it. Only `tobytes` copies it into one object.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from collections.abc import Iterable, Sequence
from typing import BinaryIO

from cdnctl.bundle.mapped_files import RELEASE_EVERY, FileMap, release, write_releasing

_VERSION = b'"version":"'
_VERSION_LENGTH = len("sha256:") + 64
_HOSTS_OPEN = b'"hosts":{'
_TENANTS = b',"tenants":{'
_WILDCARDS = b'},"wildcards":'

Span = tuple[int, int, bytes]  # (start, end, text): file bytes [start, end) read as text


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


def tenant_members(manifest: bytes) -> tuple[int, int] | None:
    """(where its `{` is, where its `}` is) of a manifest's tenants map, or None."""
    members_from = tenants_open(manifest)
    members_to = manifest.rfind(_WILDCARDS)  # (the last map, the shortest: from the end)
    return (members_from, members_to) if 0 <= members_from < members_to else None


def digest_at(manifest: bytes, members: tuple[int, int], tenant: str) -> int:
    """Where the digest of `tenant` begins in a manifest (past its `,"<id>":"`), or -1;
    `members`: `tenant_members`."""
    at = find_sorted(manifest, b",", tenant.encode(), *members)
    return at + len(tenant) + 5 if at >= 0 else -1


def _slices(parts: Iterable[bytes | memoryview], most: int) -> Iterable[bytes | memoryview]:
    """The parts, each cut in slices of at most `most` bytes (so that the pages of one
    mapped part of a gigabyte are dropped while it is written, not after)."""
    for part in parts:
        if len(part) <= most:
            yield part
            continue
        view = memoryview(part)
        for at in range(0, len(view), most):
            yield view[at : at + most]


class BundleBytes:
    def __init__(self, data: bytes | mmap.mmap, patches: Sequence[Span] = ()) -> None:
        """`data` with `patches` applied: each (start, end, text), data[start:end] read as
        text (sorted, not overlapping)."""
        self.data, self.patches = data, tuple(patches)
        self._texts = {start: (end, text) for start, end, text in self.patches}
        self._size = len(data) + sum(len(text) - (end - start) for start, end, text in patches)
        self._joined: bytes | None = data if isinstance(data, bytes) and not patches else None
        self._sha256: str | None = None
        self._lines: tuple[int, int] | None = None  # where the tenant lines are in `data`

    def __len__(self) -> int:
        return self._size

    def pieces(self) -> list[bytes | memoryview]:
        return pieces(self.data, self.patches)

    def tobytes(self) -> bytes:
        """The bundle as one bytes object (copied the first time, unless it is one)."""
        if self._joined is None:
            self._joined = b"".join(self.pieces())
        return self._joined

    def sha256_tag(self) -> str:
        """`sha256:<hex>` of the whole bundle (what an edge reports as `content` after a
        full apply of it)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for piece in self.pieces():
                digest.update(piece)
            self._sha256 = "sha256:" + digest.hexdigest()
        return self._sha256

    def write_to(self, handle: BinaryIO) -> None:
        """Write the bundle to `handle`, hashing it meanwhile in another thread (both let go
        of the GIL over large buffers): `sha256_tag` is then known."""
        parts = self.pieces()
        if self._sha256 is not None or self._size < 1 << 20:
            write_releasing(handle, parts)
            return
        digest = hashlib.sha256()
        hashing = threading.Thread(target=lambda: [digest.update(part) for part in parts])
        hashing.start()
        try:
            write_releasing(handle, _slices(parts, RELEASE_EVERY // 4))
        finally:
            hashing.join()
        if isinstance(self.data, FileMap):  # (what the hashing read after the last drop)
            release([self.data])
        self._sha256 = "sha256:" + digest.hexdigest()

    def version_at(self) -> int:
        """Where in `data` the text of the bundle's `version` begins (its last
        `"version":"` member), or -1."""
        at = self.data.rfind(_VERSION)
        return at + len(_VERSION) if at >= 0 else -1

    def version(self) -> str | None:
        """The `version` the bundle states, or None."""
        at = self.version_at()
        if at < 0:
            return None
        text = self._texts[at][1] if at in self._texts else self.data[at : at + _VERSION_LENGTH]
        return bytes(text).decode("ascii", "replace")

    def line(self, tenant: str) -> tuple[int, int, bytes] | None:
        """(start, end) in `data` of one tenant's line (`\\n"<id>":{...}[,]`) and its text as
        the bundle reads it now, or None when the bundle has no such tenant."""
        key = tenant.encode()
        if self._lines is None:
            self._lines = tenants_open(self.data), self.data.rfind(b"\n}")
        lines_from, lines_to = self._lines
        if lines_from < 0 or lines_to < lines_from or self.data[lines_from + 1] != 10:  # "\n"
            return None
        start = find_sorted(self.data, b"\n", key, lines_from + 1, lines_to)
        if start < 0:  # (lines out of order: not cdnctl's layout) look everywhere
            start = self.data.find(b'\n"' + key + b'":', lines_from, lines_to + 1)
            if start < 0:
                return None
        end = self.data.find(b"\n", start + 1)
        if start in self._texts:
            return start, end, self._texts[start][1]
        return start, end, bytes(self.data[start:end])

    def fragment(self, tenant: str) -> bytes | None:
        """The compiled text of one tenant (from its `line`), or None."""
        found = self.line(tenant)
        return found[2][len(tenant) + 4 :].removesuffix(b",") if found else None
