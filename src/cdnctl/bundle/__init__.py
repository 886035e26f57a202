"""Turning valid tenants into what edges run: bundle format, compile, plan, secrets.

Imports from `cdnctl.tenants` only.
"""
