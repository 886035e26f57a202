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
from collections.abc import Sequence
from typing import BinaryIO

from cdnctl.bundle.patch import Span, find_sorted, pieces, tenants_open

_VERSION = b'"version":"'
_VERSION_LENGTH = len("sha256:") + 64


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
            handle.writelines(parts)
            return
        digest = hashlib.sha256()
        hashing = threading.Thread(target=lambda: [digest.update(part) for part in parts])
        hashing.start()
        try:
            for part in parts:
                handle.write(part)
        finally:
            hashing.join()
        self._sha256 = "sha256:" + digest.hexdigest()

    def version(self) -> str | None:
        """The `version` the bundle states (its last `"version":"` member), or None."""
        at = self.data.rfind(_VERSION)
        if at < 0:
            return None
        at += len(_VERSION)
        text = self._texts[at][1] if at in self._texts else self.data[at : at + _VERSION_LENGTH]
        return bytes(text).decode("ascii", "replace")

    def fragment(self, tenant: str) -> bytes | None:
        """The compiled text of one tenant, from its line (`\\n"<id>":{...}[,]`), or None
        when the bundle has no such tenant."""
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
        if start in self._texts:
            line = self._texts[start][1]
        else:
            line = bytes(self.data[start : self.data.find(b"\n", start + 1)])
        return line[len(key) + 4 :].removesuffix(b",")
