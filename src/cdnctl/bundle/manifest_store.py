"""The manifests of recent compiles, by version: what a delta is made against.

A delta from version A to B needs A's manifest (its tenant digests and host indexes, see
format.py) and B's bundle. `cdnctl compile` keeps the manifest of each bundle it writes in
the compile cache directory (`manifests/<hex>.json`, the newest KEEP of them), so a later
compile, `cdnctl apply` or the tenants playbook can make a delta against what an edge
reports it runs. A manifest is only ever used after checking that its SHA-256 is the
version it is filed under.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cdnctl.bundle.format import sha256_tag

KEEP = 8
DIRECTORY = "manifests"
_PREFIX = "sha256:"


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
        kept = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in kept[:-KEEP]:
            old.unlink(missing_ok=True)

    def load(self, version: str | None) -> bytes | None:
        """The manifest of `version`, or None when it is not here (or not that version)."""
        path = self._path(version or "")
        if path is None:
            return None
        try:
            manifest = path.read_bytes()
        except OSError:
            return None
        return manifest if sha256_tag(manifest) == version else None
