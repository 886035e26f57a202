"""Ansible inventory from the Pulumi fleet's `inventory` stack output.

The Pulumi program (`pulumi/`) exports one structured output, `inventory`:

    {
      "hosts":  {"eu-edge-1": {"cdn_region": "eu", "cdn_role": "edge", "ansible_host": ...,
                               "cdn_public_address": ..., "cdn_private_address": ..., ...}},
      "groups": {"edge": ["eu-edge-1"], "shield": [], "dns": [...], "prometheus": [...],
                 "grafana": [...], "region_eu": [...]},
      "vars":   {"cdn_domain": "cdn.test", ...}
    }

Every host carries the five `REQUIRED_HOST_VARS` (more are allowed, e.g. `ansible_connection`);
`groups` holds exactly the role groups plus one `region_<name>` group per region (a group
may be empty), and every host sits in the group of its `cdn_role` and of its `cdn_region`.
`vars` (optional) become variables of the `all` group.

The functions here check that contract and turn it into a deterministic Ansible YAML inventory
(`all.hosts` with the host variables, one child group per role and region, `all.vars`).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

ROLE_GROUPS = ("edge", "shield", "dns", "prometheus", "grafana")
REGION_GROUP_PREFIX = "region_"
REQUIRED_HOST_VARS = (
    "cdn_region",
    "cdn_role",
    "ansible_host",
    "cdn_public_address",
    "cdn_private_address",
)
OUTPUT_KEY = "inventory"


class InventoryError(ValueError):
    """The stack output does not hold an inventory of the expected shape."""


def region_group(region: str) -> str:
    """The Ansible group of every host in `region`."""
    return f"{REGION_GROUP_PREFIX}{region}"


class HostVars(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    cdn_region: str
    cdn_role: str
    ansible_host: str
    cdn_public_address: str
    cdn_private_address: str


class FleetInventory(BaseModel):
    """The `inventory` stack output (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    hosts: dict[str, HostVars]
    groups: dict[str, list[str]]
    vars: dict[str, Any] = {}

    @model_validator(mode="after")
    def _groups_match_hosts(self) -> FleetInventory:
        expected: dict[str, list[str]] = {group: [] for group in ROLE_GROUPS}
        for name, host in self.hosts.items():
            if host.cdn_role not in ROLE_GROUPS:
                raise ValueError(
                    f"hosts.{name}.cdn_role is {host.cdn_role!r}; expected one of "
                    f"{', '.join(ROLE_GROUPS)}"
                )
            expected[host.cdn_role].append(name)
            expected.setdefault(region_group(host.cdn_region), []).append(name)
        for group in self.groups:
            if group.startswith(REGION_GROUP_PREFIX):
                expected.setdefault(group, [])  # a region without hosts keeps its group
        actual = {group: sorted(members) for group, members in self.groups.items()}
        expected = {group: sorted(members) for group, members in expected.items()}
        if actual != expected:
            missing = sorted(set(expected) - set(actual))
            unexpected = sorted(set(actual) - set(expected))
            differing = sorted(
                group for group in set(actual) & set(expected) if actual[group] != expected[group]
            )
            details = []
            if missing:
                details.append(f"missing groups {missing}")
            if unexpected:
                details.append(f"unexpected groups {unexpected}")
            details.extend(
                f"groups.{group} is {actual[group]} but the hosts' cdn_role/cdn_region say "
                f"{expected[group]}"
                for group in differing
            )
            raise ValueError(
                "groups must be exactly the role groups plus region_<name> per region, each "
                "listing the hosts whose cdn_role/cdn_region name it: " + "; ".join(details)
            )
        return self


def parse_stack_output(stack_output: Any) -> FleetInventory:
    """Check the JSON object printed by `pulumi stack output --json` and return its inventory."""
    if not isinstance(stack_output, dict):
        raise InventoryError(
            f"the stack output must be a JSON object (what `pulumi stack output --json` prints), "
            f"got {type(stack_output).__name__}"
        )
    if OUTPUT_KEY not in stack_output:
        present = ", ".join(sorted(stack_output)) or "none"
        raise InventoryError(
            f"the stack output has no key {OUTPUT_KEY!r} (keys present: {present}); expected the "
            f"fleet's inventory object with 'hosts' and 'groups' - is this the output of the "
            f"cdnctl-fleet Pulumi project (pulumi/)?"
        )
    raw = stack_output[OUTPUT_KEY]
    if not isinstance(raw, dict):
        raise InventoryError(
            f"stack output key {OUTPUT_KEY!r} must be an object with 'hosts' and 'groups', got "
            f"{type(raw).__name__}: {raw!r:.80}"
        )
    try:
        return FleetInventory.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(error)}" for error in exc.errors())
        raise InventoryError(
            f"stack output key {OUTPUT_KEY!r} does not match the fleet inventory contract "
            f"(hosts -> {{name: {{{', '.join(REQUIRED_HOST_VARS)}}}}}, groups -> {{group: "
            f"[host names]}}, optional vars):\n{problems}"
        ) from None


def _describe(error: Any) -> str:
    path = ".".join(str(part) for part in (OUTPUT_KEY, *error["loc"]))
    if error["type"] == "value_error":
        return f"{path}: {error['ctx']['error']}"
    return f"{path}: {error['msg']} (got {error['input']!r:.80})"


def ansible_inventory(inventory: FleetInventory) -> dict[str, Any]:
    """The Ansible YAML inventory structure for `inventory` (host variables under all.hosts)."""
    all_group: dict[str, Any] = {
        "hosts": {
            name: host.model_dump(mode="json") for name, host in sorted(inventory.hosts.items())
        },
        "children": {
            group: {"hosts": dict.fromkeys(sorted(members))}
            for group, members in sorted(inventory.groups.items())
        },
    }
    if inventory.vars:
        all_group["vars"] = inventory.vars
    return {"all": all_group}


def render_inventory(stack_output: Any) -> str:
    """YAML text of the Ansible inventory for a parsed `pulumi stack output --json` object."""
    inventory = ansible_inventory(parse_stack_output(stack_output))
    return yaml.safe_dump(inventory, sort_keys=True, default_flow_style=False)


def load_stack_output(text: str, source: str) -> Any:
    """Parse `pulumi stack output --json` text read from `source` (a file name or command)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InventoryError(
            f"{source} is not JSON ({exc}); produce it with `pulumi stack output --json`"
        ) from None
