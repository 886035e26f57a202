"""Shared fixtures: paths of the checkout and a factory for tenant files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tenant_doc(tenant_id: str, **overrides: Any) -> dict[str, Any]:
    """A minimal valid tenant document, with top-level keys replaced by `overrides`."""
    doc: dict[str, Any] = {
        "id": tenant_id,
        "domains": [f"cdn.{tenant_id}.test"],
        "origin": {"url": f"https://origin.{tenant_id}.test"},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def tenants_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tenants"
    directory.mkdir()
    return directory


@pytest.fixture
def write_tenant(tenants_dir: Path) -> Callable[..., Path]:
    def write(tenant_id: str, *, text: str | None = None, **overrides: Any) -> Path:
        path = tenants_dir / f"{tenant_id}.yaml"
        body = text if text is not None else yaml.safe_dump(tenant_doc(tenant_id, **overrides))
        path.write_text(body, encoding="utf-8")
        return path

    return write
