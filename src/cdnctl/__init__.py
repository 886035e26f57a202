"""cdnctl: a multi-tenant CDN run as code."""

__version__ = "0.1.0"
