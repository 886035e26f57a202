"""The manifests of recent compiles, by version: what a delta is made against.

A delta from version A to B needs A's manifest (its tenant digests and host indexes, see
format.py) and B's bundle. `cdnctl compile` keeps the manifest of each bundle it writes in
the compile cache directory (`manifests/<hex>.json`, the newest KEEP of them), so a later
compile, `cdnctl apply` or the tenants playbook can make a delta against what an edge
reports it runs. A manifest is only ever used after checking that its SHA-256 is the
version it is filed under, once per process: the manifests this process saved or checked
last are kept (RECENT of them, by the file's stat), so a compile and the delta after it do
not read and hash 160 MB again at 1M tenants.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cdnctl.bundle.format import sha256_tag

KEEP = 8
RECENT = 2
DIRECTORY = "manifests"
_PREFIX = "sha256:"
# path -> (size, mtime_ns, inode) of the file when it was saved or checked, its bytes
_recent: dict[Path, tuple[tuple[int, int, int], bytes]] = {}


def _stat_key(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _remember(path: Path, manifest: bytes) -> None:
    _recent.pop(path, None)
    _recent[path] = (_stat_key(path), manifest)
    while len(_recent) > RECENT:
        del _recent[next(iter(_recent))]


class ManifestStore:
    def __init__(self, cache_dir: Path) -> None:
        self.directory = cache_dir / DIRECTORY

    def _path(self, version: str) -> Path | None:
        hex_part = version.removeprefix(_PREFIX)
        if (
            not version.startswith(_PREFIX)
            or len(hex_part) != 64
            or hex_part.strip("0123456789abcdef")
        ):
            return None
        return self.directory / f"{hex_part}.json"

    def save(self, version: str, manifest: bytes) -> None:
        """File the manifest of `version` (the compile just hashed it: `load` checks it)."""
        path = self._path(version)
        if path is None:
            raise ValueError(f"{version!r} is not a version")
        self.directory.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            os.utime(path)  # newest again: kept longest
        else:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".manifest-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(manifest)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        _remember(path, manifest)
        kept = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in kept[:-KEEP]:
            old.unlink(missing_ok=True)

    def load(self, version: str | None) -> bytes | None:
        """The manifest of `version`, or None when it is not here (or not that version)."""
        path = self._path(version or "")
        if path is None:
            return None
        try:
            key = _stat_key(path)
            known = _recent.get(path)
            if known is not None and known[0] == key:
                return known[1]
            manifest = path.read_bytes()
        except OSError:
            return None
        if sha256_tag(manifest) != version:
            return None
        _remember(path, manifest)
        return manifest
