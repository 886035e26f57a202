"""The incremental compile cache: per file, the result of `check_file`, keyed by content.

Like git's index, a file whose (size, mtime, inode) is unchanged is not even read again;
a file whose stat changed is read and hashed, and its old result is reused when the
content is the same. Entries are only valid for one policy and one build of cdnctl (the
fingerprint), and a file modified within the cache's own timestamp granularity is always
re-read, so an edit can never be missed.

One file: an 8-byte length, a `marshal`-ed index (plain tuples and strings: fast to load
at 100k entries, no code can hide in it), then every compiled fragment back to back; the
index holds offsets, so fragments are sliced out of one buffer instead of rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import cdnctl
from cdnctl.problems import Problem
from cdnctl.validate import FileResult

CACHE_NAME = "compile-cache.bin"
_RACY_WINDOW_NS = 2_000_000_000
_FORMAT = 3
_new_tuple = tuple.__new__

StatKey = tuple[int, int, int]  # size, mtime_ns, inode


# The modules whose code decides what `check_file` returns for a file. A change to any of
# them invalidates every cached result; add a module here when check_file starts using it.
RESULT_MODULES = (
    "bundle",
    "compile_cache",
    "domains",
    "durations",
    "effective",
    "model",
    "origins",
    "policy",
    "problems",
    "validate",
    "yaml_loader",
)


def code_fingerprint() -> str:
    """Hash of the sources that shape a file's result: a new build never trusts an old cache."""
    digest = hashlib.sha256()
    package = Path(cdnctl.__file__).parent
    for source in (package / f"{name}.py" for name in RESULT_MODULES):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


class CompileCache:
    def __init__(self, directory: Path | None, fingerprint: str) -> None:
        self.path = directory / CACHE_NAME if directory else None
        self.fingerprint = fingerprint
        # display -> (stat, sha256, tenant id, domains, fragment offset, length, problems)
        self.index: dict[str, tuple] = {}
        self.blob = memoryview(b"")
        self.written_at_ns = 0
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        try:
            data = self.path.read_bytes()
            size = int.from_bytes(data[:8], "little")
            fmt, fingerprint, written_at_ns, index = marshal.loads(data[8 : 8 + size])
        except (EOFError, ValueError, TypeError):  # corrupt or foreign: only a slower compile
            return
        if fmt == _FORMAT and fingerprint == self.fingerprint and isinstance(index, dict):
            self.index, self.written_at_ns = index, written_at_ns
            self.blob = memoryview(data)[8 + size :]

    def lookup(self, display: str, stat: StatKey) -> FileResult | None:
        """The result of an unchanged file (same stat, not modified near the last write)."""
        entry = self.index.get(display)
        if entry is None or entry[0] != stat:
            return None
        if stat[1] >= self.written_at_ns - _RACY_WINDOW_NS:
            return None  # modified too close to the last write to trust the stat
        return self._result(display, entry)

    def by_content(self, display: str, content_sha256: bytes) -> FileResult | None:
        entry = self.index.get(display)
        if entry is None or entry[1] != content_sha256:
            return None
        return self._result(display, entry)

    def stat_of(self, display: str) -> StatKey | None:
        entry = self.index.get(display)
        return entry[0] if entry else None

    def _result(self, display: str, entry: tuple) -> FileResult:
        _, _, tenant_id, domains, offset, length, problems = entry
        fragment = self.blob[offset : offset + length] if offset >= 0 else None
        if problems:
            problems = tuple(Problem(*fields) for fields in problems)
        # tuple.__new__ skips the NamedTuple's Python-level constructor (100k+ calls)
        return _new_tuple(FileResult, (display, tenant_id, domains, fragment, problems))

    def save(self, files: Iterable[tuple[str, StatKey, bytes, FileResult]]) -> None:
        """Replace the cache with these (display, stat, content sha256, result) records."""
        if self.path is None:
            return
        index: dict[str, tuple] = {}
        fragments: list[bytes | memoryview] = []
        offset = 0
        for display, stat, digest, result in files:
            position, length = -1, 0
            if result.fragment is not None:
                position, length = offset, len(result.fragment)
                fragments.append(result.fragment)
                offset += length
            problems = tuple(
                (p.file, p.field, p.reason, p.fix, p.value, p.line) for p in result.problems
            )
            index[display] = (
                stat,
                digest,
                result.tenant_id,
                result.domains,
                position,
                length,
                problems,
            )
        head = marshal.dumps((_FORMAT, self.fingerprint, time.time_ns(), index))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cache-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(len(head).to_bytes(8, "little"))
                handle.write(head)
                handle.writelines(fragments)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
