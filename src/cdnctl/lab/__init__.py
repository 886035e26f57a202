"""The local lab and its sample customer origins.

May import any package below the command line; nothing but `cdnctl.cli` imports it.
"""
