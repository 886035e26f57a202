"""Canonical JSON and SHA-256 tags: how a tenant's digest and a bundle's version are made.

Deterministic bytes are the contract here: the same document always serialises to the same
bytes, so the same tenants give the same digests and the same bundle version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False), made once (dumps
# builds a new encoder per call) and without the check for reference cycles (the documents
# are trees; a cycle would still fail): for what orjson refuses
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode
_SORTED = orjson.OPT_SORT_KEYS


def canonical_json(document: Any) -> bytes:
    """Serialise deterministically: sorted keys, compact separators, UTF-8.

    Written by orjson, in a quarter of the time of the json module (4 µs against 15 µs per
    tenant; a 100k-tenant compile does it 100k times), and byte for byte what
    json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes for what
    these documents hold: strings (escapes included), integers, booleans, null, lists and
    maps with string keys (tests/tenants/test_canonical.py holds it to that). Integers
    past 64 bits and strings with a lone surrogate go to the json module (which refuses
    the latter too). No document here holds a float (orjson would write 1e-7 where json
    writes 1e-07)."""
    try:
        return orjson.dumps(document, option=_SORTED)
    except orjson.JSONEncodeError:
        return _encode(document).encode("utf-8")


def sha256_tag(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
