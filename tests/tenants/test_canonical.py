"""canonical_json writes what json.dumps(sort_keys, compact, ensure_ascii=False) writes."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from cdnctl.tenants.canonical import canonical_json


def _json_module(document) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


_text = st.text(st.characters(exclude_categories=("Cs",)))  # (every code point but surrogates)
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _text
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_documents)
def test_same_bytes_as_the_json_module(document):
    assert canonical_json(document) == _json_module(document)


def test_every_control_character_and_the_characters_json_escapes():
    texts = [chr(c) for c in range(0x20)] + ['"', "\\", "/", "\x7f", "\u2028", "\u2029", "\ufeff"]
    document = {text: [text, f"a{text}b"] for text in texts}
    assert canonical_json(document) == _json_module(document)


def test_large_integers_and_subclassed_strings():
    class Vault(str):
        pass

    document = {"big": 2**64, "small": -(2**63) - 1, "vault": Vault("$ANSIBLE_VAULT;1.1")}
    assert canonical_json(document) == _json_module(document)
