"""The incremental compile cache: per file, the result of `check_file`, keyed by content.

Like git's index, a file whose (size, mtime, inode) is unchanged is not even read again;
a file whose stat changed is read and hashed, and its old result is reused when the
content is the same. Entries are only valid for one policy and one build of cdnctl (the
fingerprint), and a file modified within the cache's own timestamp granularity is always
re-read, so an edit can never be missed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cdnctl
from cdnctl.validate import FileResult

CACHE_NAME = "compile-cache.pickle"
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class CacheEntry:
    stat: tuple[int, int, int]  # size, mtime_ns, inode
    content_sha256: bytes
    result: FileResult


def code_fingerprint() -> str:
    """Hash of cdnctl's own sources: a new build never trusts an old cache."""
    digest = hashlib.sha256()
    package = Path(cdnctl.__file__).parent
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


class CompileCache:
    def __init__(self, directory: Path | None, fingerprint: str) -> None:
        self.path = directory / CACHE_NAME if directory else None
        self.fingerprint = fingerprint
        self.entries: dict[str, CacheEntry] = {}
        self.written_at_ns = 0
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            with self.path.open("rb") as handle:
                fingerprint, written_at_ns, entries = pickle.load(handle)
        except Exception:  # a corrupt or foreign cache is only a slower compile
            return
        if fingerprint == self.fingerprint:
            self.entries, self.written_at_ns = entries, written_at_ns

    def lookup(self, display: str, stat: os.stat_result) -> CacheEntry | None:
        entry = self.entries.get(display)
        if entry is None or entry.stat != stat_key(stat):
            return None
        if stat.st_mtime_ns >= self.written_at_ns - _RACY_WINDOW_NS:
            return None  # modified too close to the last write to trust the stat
        return entry

    def by_content(self, display: str, content_sha256: bytes) -> FileResult | None:
        entry = self.entries.get(display)
        return entry.result if entry and entry.content_sha256 == content_sha256 else None

    def save(self, entries: dict[str, CacheEntry]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cache-")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump((self.fingerprint, time.time_ns(), entries), handle, protocol=5)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def stat_key(stat: os.stat_result) -> tuple[int, int, int]:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)
