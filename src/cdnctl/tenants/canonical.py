"""Canonical JSON and SHA-256 tags: how a tenant's digest and a bundle's version are made.

Deterministic bytes are the contract here: the same document always serialises to the same
bytes, so the same tenants give the same digests and the same bundle version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# what json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) uses, made
# once (dumps builds a new encoder per call: 100k+ calls per compile); without the check
# for reference cycles (the documents are trees this code builds; a cycle would still fail,
# as a RecursionError), which costs a dict insert and delete per container
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode


def canonical_json(document: Any) -> bytes:
    """Serialise deterministically: sorted keys, compact separators, UTF-8."""
    return _encode(document).encode("utf-8")


def sha256_tag(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
