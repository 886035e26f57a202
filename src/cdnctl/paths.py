"""Where the project's shared files live (templates/, roles/, tenants/), and how a private
file (a key, a token) is written: 0600 from its first byte, replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout cdnctl runs from: $CDNCTL_HOME, else the tree holding src/cdnctl."""
    if home := os.environ.get("CDNCTL_HOME"):
        return Path(home)
    return Path(__file__).resolve().parents[2]


def templates_dir() -> Path:
    return project_root() / "templates"


def write_private(path: Path, data: str) -> None:
    """Write `data` to `path` as a 0600 file: through a temporary file created 0600 (chmod
    too, in case a stale one had other bits), then renamed over `path`."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
