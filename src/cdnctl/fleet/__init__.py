"""Many nodes described by an inventory: inventory from Pulumi outputs, targets.

Imports from `cdnctl.tenants`, `cdnctl.bundle` and `cdnctl.edge` only.
"""
