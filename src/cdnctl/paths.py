"""Where the project's shared files live (templates/, roles/, tenants/)."""

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
