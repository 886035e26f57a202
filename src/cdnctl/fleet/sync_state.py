"""What `cdnctl sync` remembers between cycles: the last good commit and its bundle.

One JSON state file (`last_good`: commit, version, applied_at; `last_rejected`: commit,
reason, at, attempts) plus, next to it, the last good compiled bundle and its manifest: what drifted
edges are brought back to and what a failed canary is rolled back to. Compiled bundles hold
no secret (they are resolved at push time), so these files are not private; every write is
atomic (a new file renamed over the old one).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class StateError(ValueError):
    """The state file exists but cannot be used."""


@dataclass(frozen=True)
class GoodCommit:
    commit: str
    version: str
    applied_at: float


@dataclass(frozen=True)
class Rejected:
    commit: str
    reason: str
    at: float
    attempts: int = 1  # times this commit was tried and rejected (retried reasons only)


@dataclass(frozen=True)
class GoodBundle:
    bundle: bytes
    manifest: bytes


class SyncState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_good: GoodCommit | None = None
        self.last_rejected: Rejected | None = None
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("last_good"):
                    self.last_good = GoodCommit(**data["last_good"])
                if data.get("last_rejected"):
                    self.last_rejected = Rejected(**data["last_rejected"])
            except (ValueError, TypeError, AttributeError) as exc:
                raise StateError(
                    f"{path}: not a cdnctl sync state file ({exc}); move it away to start over"
                ) from None

    @property
    def _bundle_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".bundle.json")

    @property
    def _manifest_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".manifest.json")

    def good_bundle(self) -> GoodBundle | None:
        if self.last_good is None:
            return None
        try:
            return GoodBundle(self._bundle_path.read_bytes(), self._manifest_path.read_bytes())
        except FileNotFoundError:
            return None

    def record_good(self, good: GoodCommit, bundle: GoodBundle) -> None:
        _write(self._bundle_path, bundle.bundle)
        _write(self._manifest_path, bundle.manifest)
        self.last_good = good
        self._save()

    def record_rejected(self, rejected: Rejected) -> None:
        self.last_rejected = rejected
        self._save()

    def _save(self) -> None:
        document: dict[str, Any] = {
            "last_good": asdict(self.last_good) if self.last_good else None,
            "last_rejected": asdict(self.last_rejected) if self.last_rejected else None,
        }
        _write(self.path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
