"""The program entry point (pulumi/__main__.py) as `pulumi up` runs it."""

from __future__ import annotations

import json
import runpy
from typing import Any

import pulumi
import pytest
from fleet_harness import PROJECT_DIR, FleetMocks, stack_config


def _run_main(raw: Any, monkeypatch: pytest.MonkeyPatch, mocks: FleetMocks) -> dict[str, Any]:
    """Run __main__.py with `raw` as the stack's `cdn:fleet`; return what it exported."""
    pulumi.runtime.set_mocks(mocks, preview=False)
    pulumi.runtime.set_all_config({"cdn:fleet": json.dumps(raw)})
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", exported.__setitem__)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        runpy.run_path(str(PROJECT_DIR / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**exported).apply(exported.update)

    try:
        program()
    finally:
        pulumi.runtime.set_all_config({})
    return exported


def test_main_reads_the_stack_config_and_exports_the_inventory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mocks = FleetMocks()
    exported = _run_main(stack_config("local"), monkeypatch, mocks)
    assert set(exported) == {"inventory"}
    assert len(exported["inventory"]["hosts"]) == 11
    assert any(r.typ == "docker:index/container:Container" for r in mocks.declared)


def test_main_stops_on_a_bad_config_before_declaring_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = stack_config("production")
    raw["regions"][0]["roles"]["dns"]["count"] = 0
    mocks = FleetMocks()
    with pytest.raises(pulumi.RunError) as caught:
        _run_main(raw, monkeypatch, mocks)
    assert "cdn:fleet.regions[0] ('eu'): roles.dns.count is 0" in str(caught.value)
    assert mocks.declared == []  # not even the providers
