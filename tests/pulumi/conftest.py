"""Fixtures for the Pulumi fleet tests (the harness itself lives in fleet_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_harness import FleetRun, run_fleet, stack_config


@pytest.fixture(scope="session")
def local_run() -> FleetRun:
    return run_fleet(stack_config("local"))


@pytest.fixture(scope="session")
def production_run() -> FleetRun:
    return run_fleet(stack_config("production"))


@pytest.fixture
def local_config() -> dict[str, Any]:
    return stack_config("local")


@pytest.fixture
def production_config() -> dict[str, Any]:
    return stack_config("production")
