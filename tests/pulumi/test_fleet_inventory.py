"""The `inventory` stack output contract and `cdnctl inventory from-pulumi` (to Ansible)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from fleet_harness import FleetMocks, FleetRun, run_fleet, stack_config
from typer.testing import CliRunner

from cdn_fleet.program import build
from cdnctl.cli.inventory import inventory_app
from cdnctl.fleet.inventory import InventoryError, render_inventory
from cdnctl.fleet.topology import FleetConfig, load_fleet_config

ROLE_GROUPS = {"edge", "shield", "dns", "prometheus", "grafana"}
HOST_VARS = {"cdn_region", "cdn_role", "ansible_host", "cdn_public_address", "cdn_private_address"}
ANSIBLE_INVENTORY = Path(sys.executable).with_name("ansible-inventory")


def _check_contract(fleet: FleetConfig, inventory: dict[str, Any]) -> None:
    assert set(inventory) == {"hosts", "groups", "vars"}
    regions = [region.name for region in fleet.regions]
    assert set(inventory["groups"]) == ROLE_GROUPS | {f"region_{name}" for name in regions}
    for name, host_vars in inventory["hosts"].items():
        assert set(host_vars) >= HOST_VARS, name
        assert name in inventory["groups"][host_vars["cdn_role"]]
        assert name in inventory["groups"][f"region_{host_vars['cdn_region']}"]
    members = [name for group in ROLE_GROUPS for name in inventory["groups"][group]]
    assert sorted(members) == sorted(inventory["hosts"])  # one role group per host
    assert inventory["vars"]["cdn_domain"] == fleet.domain
    assert inventory["vars"]["cdn_admin_api_port"] == 9145
    assert inventory["vars"]["cdn_regions"] == {
        region.name: {"client_networks": region.client_networks} for region in fleet.regions
    }


@pytest.mark.parametrize("stack", ["local", "production"])
def test_inventory_output_has_the_contract_shape(stack: str) -> None:
    fleet = load_fleet_config(stack_config(stack))
    pulumi.runtime.set_mocks(FleetMocks(), preview=False)

    @pulumi.runtime.test
    def check_program() -> pulumi.Output[None]:
        outputs = build(fleet)
        assert set(outputs) == {"inventory"}
        return pulumi.Output.all(outputs["inventory"]).apply(
            lambda values: _check_contract(fleet, values[0])
        )

    check_program()


def _stack_output_file(run: FleetRun, directory: Path) -> Path:
    path = directory / "outputs.json"
    path.write_text(json.dumps({"inventory": run.outputs["inventory"], "other": 1}))
    return path


def _ansible_inventory_list(path: Path, tmp_path: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
    }
    result = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("stack", ["local", "production"])
def test_from_pulumi_writes_an_inventory_ansible_accepts(
    stack: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run: FleetRun = request.getfixturevalue(f"{stack}_run")
    out = tmp_path / "inventory" / "hosts.yml"
    result = CliRunner().invoke(
        inventory_app,
        [
            "from-pulumi",
            "--stack-output",
            str(_stack_output_file(run, tmp_path)),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    listed = _ansible_inventory_list(out, tmp_path)
    hosts = run.outputs["inventory"]["hosts"]
    for group, members in run.outputs["inventory"]["groups"].items():
        assert sorted(listed.get(group, {}).get("hosts", [])) == sorted(members), group
    assert set(listed["all"]["children"]) >= ROLE_GROUPS | {"region_eu", "region_us"}
    hostvars = listed["_meta"]["hostvars"]
    assert set(hostvars) == set(hosts)
    for name, host_vars in hostvars.items():
        assert host_vars["cdn_region"] == name.split("-")[0]
        assert host_vars["cdn_domain"] == run.outputs["inventory"]["vars"]["cdn_domain"]
        assert set(host_vars) >= HOST_VARS
        if stack == "local":
            assert host_vars["ansible_connection"] == "cdnctl_podman"


def test_from_pulumi_output_is_deterministic(local_run: FleetRun, tmp_path: Path) -> None:
    shuffled = copy.deepcopy(local_run.outputs)
    inventory = shuffled["inventory"]
    inventory["hosts"] = dict(reversed(list(inventory["hosts"].items())))
    inventory["groups"] = {g: list(reversed(m)) for g, m in reversed(inventory["groups"].items())}
    first = render_inventory(local_run.outputs)
    assert render_inventory(shuffled) == first
    document = yaml.safe_load(first)
    assert document["all"]["children"]["grafana"] == {"hosts": {"eu-grafana-1": None}}
    assert document["all"]["hosts"]["us-edge-2"]["cdn_role"] == "edge"


def _drop_host_var(output: dict[str, Any]) -> None:
    del output["inventory"]["hosts"]["eu-dns-1"]["cdn_region"]


def _host_outside_its_group(output: dict[str, Any]) -> None:
    output["inventory"]["groups"]["edge"].remove("eu-edge-1")


def _unknown_role(output: dict[str, Any]) -> None:
    output["inventory"]["hosts"]["eu-edge-1"]["cdn_role"] = "cache"


def _missing_role_group(output: dict[str, Any]) -> None:
    del output["inventory"]["groups"]["grafana"]


def _unknown_key(output: dict[str, Any]) -> None:
    output["inventory"]["children"] = {}


BAD_STACK_OUTPUTS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "no inventory key": (
        lambda output: {"other": 1},
        "has no key 'inventory' (keys present: other)",
    ),
    "inventory is a string": (
        lambda output: {"inventory": "hosts"},
        "key 'inventory' must be an object with 'hosts' and 'groups', got str",
    ),
    "not an object": (lambda output: [output], "must be a JSON object"),
    "host var missing": (
        _drop_host_var,
        "inventory.hosts.eu-dns-1.cdn_region: Field required",
    ),
    "host not in its role group": (
        _host_outside_its_group,
        "groups.edge is ['eu-edge-2', 'us-edge-1', 'us-edge-2'] but the hosts' "
        "cdn_role/cdn_region say ['eu-edge-1', 'eu-edge-2', 'us-edge-1', 'us-edge-2']",
    ),
    "unknown role": (_unknown_role, "hosts.eu-edge-1.cdn_role is 'cache'; expected one of"),
    "missing role group": (_missing_role_group, "missing groups ['grafana']"),
    "unknown key": (_unknown_key, "inventory.children: Extra inputs are not permitted"),
}


@pytest.mark.parametrize(
    ("mutate", "expected"), list(BAD_STACK_OUTPUTS.values()), ids=list(BAD_STACK_OUTPUTS)
)
def test_malformed_stack_output_is_rejected_clearly(
    local_run: FleetRun,
    mutate: Callable[[dict[str, Any]], Any],
    expected: str,
    tmp_path: Path,
) -> None:
    output = copy.deepcopy(local_run.outputs)
    output = mutate(output) or output
    with pytest.raises(InventoryError) as caught:
        render_inventory(output)
    assert expected in str(caught.value)

    source = tmp_path / "outputs.json"
    source.write_text(json.dumps(output))
    out = tmp_path / "hosts.yml"
    result = CliRunner().invoke(
        inventory_app, ["from-pulumi", "--stack-output", str(source), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert expected in result.output
    assert not out.exists()


def test_from_pulumi_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    source = tmp_path / "outputs.json"
    source.write_text("Current stack outputs (1):\n")
    result = CliRunner().invoke(
        inventory_app, ["from-pulumi", "--stack-output", str(source), "--out", "x.yml"]
    )
    assert result.exit_code == 2
    assert "is not JSON" in result.output
    assert "pulumi stack output --json" in result.output


def test_from_pulumi_with_stack_needs_the_pulumi_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `pulumi` here
    result = CliRunner().invoke(
        inventory_app, ["from-pulumi", "--stack", "local", "--out", str(tmp_path / "h.yml")]
    )
    assert result.exit_code == 2
    assert "the pulumi CLI is not on PATH" in result.output
    assert "--stack-output" in result.output


def test_from_pulumi_with_stack_runs_the_pulumi_cli(
    local_run: FleetRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    (tmp_path / "outputs.json").write_text(json.dumps(local_run.outputs))
    fake.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, sys\n"
        f"directory = pathlib.Path({str(tmp_path)!r})\n"
        "(directory / 'args').write_text(' '.join(sys.argv[1:]))\n"
        "print((directory / 'outputs.json').read_text())\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    out = tmp_path / "hosts.yml"
    result = CliRunner().invoke(
        inventory_app, ["from-pulumi", "--stack", "local", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "args").read_text().split() == [
        "stack",
        "output",
        "--json",
        "--stack",
        "local",
        "--cwd",
        "pulumi",
    ]
    assert "eu-edge-1" in yaml.safe_load(out.read_text())["all"]["hosts"]


@pytest.mark.parametrize(
    "arguments",
    [[], ["--stack", "local", "--stack-output", "outputs.json"]],
    ids=["neither", "both"],
)
def test_from_pulumi_needs_exactly_one_source(
    arguments: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs.json").write_text("{}")
    result = CliRunner().invoke(inventory_app, ["from-pulumi", "--out", "h.yml", *arguments])
    assert result.exit_code == 2
    assert "exactly one of --stack-output FILE or --stack NAME" in result.output


def test_a_role_without_hosts_keeps_an_empty_group(tmp_path: Path) -> None:
    config = stack_config("local")
    for region in config["regions"]:
        region["roles"]["shield"]["count"] = 0
    run = run_fleet(config)
    assert run.outputs["inventory"]["groups"]["shield"] == []
    source = _stack_output_file(run, tmp_path)
    out = tmp_path / "hosts.yml"
    result = CliRunner().invoke(
        inventory_app, ["from-pulumi", "--stack-output", str(source), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    listed = _ansible_inventory_list(out, tmp_path)
    assert "shield" in listed["all"]["children"]
    assert "hosts" not in listed.get("shield", {})
