"""One edge or shield node: nginx.conf, the local runner, the admin API client, preview.

Imports from `cdnctl.tenants` and `cdnctl.bundle` only.
"""
