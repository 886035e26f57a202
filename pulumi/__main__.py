"""Pulumi entry point: validate the stack config, declare the fleet, export its outputs."""

import pulumi

from cdn_fleet.program import build
from cdnctl.fleet.topology import CONFIG_KEY, FleetConfigError, load_fleet_config

namespace, key = CONFIG_KEY.split(":")
try:
    fleet = load_fleet_config(pulumi.Config(namespace).require_object(key))
except FleetConfigError as exc:
    raise pulumi.RunError(str(exc)) from None

for output_name, value in build(fleet).items():
    pulumi.export(output_name, value)
