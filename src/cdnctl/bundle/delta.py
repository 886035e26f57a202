"""Deltas: what turns the bundle an edge runs (the base) into a new one (the target).

An edge running version A that is sent the delta A -> B applies only the difference and
proves it reached exactly B (its manifest patched with the delta must hash to B; see
roles/edge/files/lua/cdnctl/store.lua, apply_delta). A delta is the bundle's own format
(format.py, one tenant per line) with other top-level members::

    {
      "base": "sha256:<A>", "version": "sha256:<B>",
      "content": "sha256:<...>",      # SHA-256 of the full bundle B as it would be sent
      "format": 1,
      "hosts":     {"new.test": "t1", "gone.test": null},   # index entries that change
      "wildcards": {...},
      "removed": ["t9"],                                    # tenant ids B no longer has
      "tenants": {"t1": {...}}                              # tenants added or changed
    }

Made from B's bundle and the manifests of A and B (no tenant is re-validated, and only the
tenants that differ are decoded). With secrets resolved (`resolver`), every tenant that
carries a secret is in the delta as well, changed or not: its digest names its secret, not
the secret's value, so a rotated password changes nothing the manifests show. Tenants
without secrets resolve to a pure function of their compiled text, which the digest pins.
`content` is what the edge reports afterwards: what a full apply of B would have made it
report, so the playbook's skip-if-same and `cdnctl apply` compare one value either way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from cdnctl.bundle.bundle_bytes import BundleBytes, digest_at, tenant_members
from cdnctl.bundle.format import TENANTS_OPEN, bundle_json, canonical_json, sha256_tag

Resolver = Callable[[dict[str, Any]], dict[str, Any]]  # a bundle -> the same, secrets resolved

# A tenant without secrets resolves to its compiled text with this one member renamed
# (bundle/secrets.py: no purge tokens -> no hashes); the key sorts in the same place.
_NO_TOKENS = b'"purge_tokens_env":[]'
_NO_TOKEN_HASHES = b'"purge_token_sha256":[]'
_NO_AUTH = b'"basic_auth":null'


class DeltaError(ValueError):
    pass


@dataclass(frozen=True)
class Delta:
    body: bytes
    base: str
    version: str
    content: str
    changed: int
    removed: int


def _tenant_lines(bundle: bytes) -> tuple[int, int]:
    """(where the first tenant line begins, where the `\\n}` after the last is)."""
    at = bundle.find(TENANTS_OPEN + b"\n")
    if at < 0:
        raise DeltaError("not a bundle in cdnctl's line layout (compile it with cdnctl)")
    return at + len(TENANTS_OPEN) + 1, bundle.rindex(b"\n}")


def split_lines(bundle: bytes) -> tuple[bytes, list[bytes], bytes]:
    """(head up to `"tenants":{`, one `"<id>":{...}` per tenant, tail from `}`) of a bundle
    in cdnctl's line layout (format.bundle_json)."""
    first, end = _tenant_lines(bundle)
    body = bundle[first:end]
    lines = [line.removesuffix(b",") for line in body.split(b"\n")] if body else []
    return bundle[: first - 1], lines, bundle[end + 1 :]


def _line_id(line: bytes) -> str:
    return line[1 : line.index(b'":')].decode()


def _carries_secrets(fragment: bytes) -> bool:
    return _NO_AUTH not in fragment or (
        b'"purge_tokens_env"' in fragment and _NO_TOKENS not in fragment
    )


def _joined(head: bytes, lines: Iterator[bytes], tail: bytes) -> Iterator[bytes]:
    """The pieces of a bundle in the line layout (format.bundle_json), in order."""
    yield head + b"\n"
    first = True
    for line in lines:
        if not first:
            yield b",\n"
        first = False
        yield line
    if not first:
        yield b"\n"
    yield tail


# A manifest as canonical_json writes it (format.py), up to its three maps' raw members.
_MANIFEST_HEAD = re.compile(rb'\{"format":(\d+),"hosts":\{')
_MANIFEST_SEPARATORS = (b'},"tenants":{', b'},"wildcards":{', b"}}")
_MEMBER_SEP, _KEY_END = b'","', b'":"'
Changes = tuple[dict[str, str], set[str]]


def _plain(section: bytes) -> bool:
    """Whether every key and value of a map's raw text (between its braces, JSON without
    backslashes: _manifest_layout) is a string: then `","` only ever separates members and
    `":"` only ever ends a key. (Strings cannot hold a quote, so `":` ends each key and
    each member has four quotes.)"""
    return section.count(b'"') == 4 * section.count(b'":')


def _members(section: bytes) -> set[bytes]:
    """The `key":"value` members of a plain map's raw text (or a run of its members)."""
    return set(section[1:-1].split(_MEMBER_SEP)) if section else set()


_CHUNK = 1 << 16


def _common_prefix(a: bytes, b: bytes, limit: int) -> int:
    """The length of the longest common prefix of a and b, at most `limit`: compared a
    chunk at a time (a one-tenant change leaves megabytes equal on both sides)."""
    at = 0
    while at + _CHUNK <= limit and a[at : at + _CHUNK] == b[at : at + _CHUNK]:
        at += _CHUNK
    end = min(at + _CHUNK, limit)
    while at < end and a[at] == b[at]:
        at += 1
    return at


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """The length of the longest common suffix of a and b, at most `limit`."""
    length, la, lb = 0, len(a), len(b)
    while (
        length + _CHUNK <= limit
        and a[la - length - _CHUNK : la - length] == b[lb - length - _CHUNK : lb - length]
    ):
        length += _CHUNK
    end = min(length + _CHUNK, limit)
    while length < end and a[la - length - 1] == b[lb - length - 1]:
        length += 1
    return length


def _differing_runs(old: bytes, new: bytes) -> tuple[bytes, bytes]:
    """The runs of whole members of two plain maps' raw texts left once the members both
    begin and end with are cut off (members are sorted by key: a few changed keys leave
    a short run)."""
    limit = min(len(old), len(new))
    start = old.rfind(_MEMBER_SEP, 0, _common_prefix(old, new, limit))
    start = start + 2 if start >= 0 else 0  # a member's opening "
    suffix = _common_suffix(old, new, limit - start)
    cut = old.find(_MEMBER_SEP, len(old) - suffix) if suffix else -1
    if cut < 0:
        return old[start:], new[start:]
    cut += 1  # after a member's closing "
    return old[start:cut], new[start : len(new) - (len(old) - cut)]


def _map_changes(old_section: bytes, new_section: bytes) -> Changes | None:
    """What differs between two maps' raw texts: {key: new value} of the keys added or
    changed, and the keys dropped; None when a text is not in the plain layout."""
    if old_section == new_section:
        return {}, set()
    if not (_plain(old_section) and _plain(new_section)):
        return None
    old, new = (_members(run) for run in _differing_runs(old_section, new_section))
    changed = dict(
        (key.decode(), value.decode())
        for key, value in (member.split(_KEY_END, 1) for member in new - old)
    )
    dropped = {member.split(_KEY_END, 1)[0].decode() for member in old - new}
    return changed, dropped - changed.keys()


def _manifest_changes(base_manifest: bytes, target_manifest: bytes) -> dict[str, Any] | None:
    """The changes from one manifest to the other without decoding either (a byte compare of
    the members: a JSON decode of two 100k-tenant manifests took most of a delta's time):
    {"format", "hosts", "tenants", "wildcards": (changed, dropped)}, or None when either is
    not in canonical_json's plain layout (then they are decoded)."""
    old, new = _manifest_layout(base_manifest), _manifest_layout(target_manifest)
    if old is None or new is None:
        return None
    result: dict[str, Any] = {"format": new[0]}
    for kind, old_section, new_section in zip(
        ("hosts", "tenants", "wildcards"), old[1:], new[1:], strict=True
    ):
        changes = _map_changes(old_section, new_section)
        if changes is None:
            return None
        result[kind] = changes
    return result


def _manifest_layout(manifest: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    """(format, hosts, tenants, wildcards raw members) of a manifest in canonical_json's
    layout, `{"format":N,"hosts":{...},"tenants":{...},"wildcards":{...}}` with no brace or
    backslash inside the maps; None otherwise. (Found and checked with bytes.find and
    bytes.count: a regular expression took 60 ms per 100k-tenant manifest.)"""
    head = _MANIFEST_HEAD.match(manifest)
    if head is None:
        return None
    sections: list[bytes] = []
    at = head.end()
    for separator in _MANIFEST_SEPARATORS:
        end = manifest.find(separator, at)
        if end < 0:
            return None
        section = manifest[at:end]
        if section.count(b"{") or section.count(b"}") or section.count(b"\\"):
            return None
        sections.append(section)
        at = end + len(separator)
    if at != len(manifest):
        return None
    return int(head.group(1)), sections[0], sections[1], sections[2]


def _patched_changes(
    base_manifest: bytes, target_manifest: bytes, tenants: Collection[str]
) -> dict[str, Any] | None:
    """_manifest_changes when only the digests of `tenants` can differ (the rest of the
    manifests is the same bytes): theirs compared, found by their members."""
    head = _MANIFEST_HEAD.match(target_manifest)
    if head is None or b"\\" in base_manifest or b"\\" in target_manifest:
        return None
    changed: dict[str, str] = {}
    manifests = (base_manifest, target_manifest)
    members = [tenant_members(manifest) for manifest in manifests]
    for tenant in tenants:
        digests = []
        for manifest, span in zip(manifests, members, strict=True):
            at = digest_at(manifest, span, tenant) if span else -1
            end = manifest.find(b'"', at) if at >= 0 else -1
            if end < 0:
                return None
            digests.append(manifest[at:end])
        if digests[0] != digests[1]:
            changed[tenant] = digests[1].decode()
    return {
        "format": int(head.group(1)),
        "hosts": ({}, set()),
        "tenants": (changed, set()),
        "wildcards": ({}, set()),
    }


def _decoded_changes(base_manifest: bytes, target_manifest: bytes) -> dict[str, Any]:
    """_manifest_changes by decoding both manifests (any JSON layout)."""
    before, after = json.loads(base_manifest), json.loads(target_manifest)
    result: dict[str, Any] = {"format": after["format"]}
    for kind in ("hosts", "tenants", "wildcards"):
        old, new = before[kind], after[kind]
        changed = {key: value for key, value in new.items() if old.get(key) != value}
        result[kind] = (changed, set(old.keys() - new.keys()))
    return result


@dataclass(frozen=True)
class ResolvedContent:
    """What resolving a bundle's secrets gives whatever the delta's base: its tenants that
    carry secrets, resolved ({tenant: canonical text}), and the `content` (SHA-256) of the
    whole resolved bundle. One pass over every line: made once per bundle (edge/push.py
    keeps it for every edge's delta), not once per delta."""

    secret_texts: dict[str, bytes]
    content: str


_AUTH_MEMBER = b'"basic_auth":'
_TOKENS_MEMBER = b'"purge_tokens_env":'
_SECRET_MEMBERS = (  # a member that names a secret: not the plain value
    re.compile(rb'"basic_auth":(?!null)'),
    re.compile(rb'"purge_tokens_env":(?!\[\])'),
)
RESOLVE_SLICE = 32 << 20  # bytes of tenant lines without secrets rewritten at a time


def _secret_line_starts(bundle: bytes, start: int, end: int) -> list[int] | None:
    """Where each tenant line of bundle[start:end] (the lines, format.bundle_json) that
    carries a secret begins, in order: found by searching the text for the members that
    name a secret, not line by line (1M tenants: seconds less). None when the lines are not
    cdnctl's compiled shape (as many `basic_auth` members as lines, each tenant has one;
    no more `purge_tokens_env` than lines)."""
    lines = bundle.count(b"\n", start, end) + 1
    if (
        bundle.count(_AUTH_MEMBER, start, end) != lines
        or bundle.count(_TOKENS_MEMBER, start, end) > lines
    ):
        return None
    found = {
        bundle.rfind(b"\n", start, match.start()) + 1 or start
        for pattern in _SECRET_MEMBERS
        for match in pattern.finditer(bundle, start, end)
    }
    return sorted(found)


def _resolution(bundle: bytes, resolver: Resolver) -> tuple[dict[str, bytes], Iterator[bytes]]:
    """The tenants that carry secrets, resolved ({tenant: canonical text}), and the resolved
    bundle in pieces: the compiled bytes, with each of those tenants' text replaced and,
    in every other line, `"purge_tokens_env":[]` renamed (what resolving does to a tenant
    without secrets). Only the tenants with secrets are decoded."""
    first, end = _tenant_lines(bundle)
    starts = _secret_line_starts(bundle, first, end) if end > first else []
    if starts is None:
        return _resolution_by_line(bundle, resolver)
    secret: dict[str, tuple[int, int]] = {}  # tenant -> where its text begins and ends
    for line in starts:
        text_from = bundle.index(b'":', line) + 2
        text_to = bundle.index(b"\n", line)
        if bundle[text_to - 1 : text_to] == b",":
            text_to -= 1
        secret[bundle[line + 1 : text_from - 2].decode()] = (text_from, text_to)
    by_secret = _resolve(resolver, {t: bundle[a:b] for t, (a, b) in secret.items()})

    def plain(a: int, b: int) -> Iterator[bytes]:
        while a < b:
            cut = min(b, a + RESOLVE_SLICE)
            if cut < b:  # at a line's end: a member is never cut in two
                cut = bundle.find(b"\n", cut, b) + 1 or b
            yield bundle[a:cut].replace(_NO_TOKENS, _NO_TOKEN_HASHES)
            a = cut

    def pieces() -> Iterator[bytes]:
        if end < first:  # no tenant: `"tenants":{` and `}` on lines of their own
            yield bundle
            return
        yield bundle[:first]
        at = first
        for tenant, (text_from, text_to) in secret.items():  # (in the bundle's order)
            yield from plain(at, text_from)
            yield by_secret[tenant]
            at = text_to
        yield from plain(at, end)
        yield bundle[end:]

    return by_secret, pieces()


def _resolve(resolver: Resolver, texts: dict[str, bytes]) -> dict[str, bytes]:
    """{tenant: its compiled text} with secrets -> {tenant: its resolved canonical text}."""
    decoded = {tenant: json.loads(text) for tenant, text in texts.items()}
    resolved = resolver({"tenants": decoded})["tenants"]
    return {tenant: canonical_json(resolved[tenant]) for tenant in texts}


def _resolution_by_line(
    bundle: bytes, resolver: Resolver
) -> tuple[dict[str, bytes], Iterator[bytes]]:
    """_resolution for lines of another shape than cdnctl's, one line at a time."""
    head, lines, tail = split_lines(bundle)
    ids = [_line_id(line) for line in lines]
    secret = {
        tenant: line[len(tenant) + 3 :]
        for tenant, line in zip(ids, lines, strict=True)
        if _carries_secrets(line)
    }
    by_secret = _resolve(resolver, secret)

    def resolved_lines() -> Iterator[bytes]:
        for tenant, line in zip(ids, lines, strict=True):
            text = by_secret.get(tenant)
            if text is None:
                yield line.replace(_NO_TOKENS, _NO_TOKEN_HASHES, 1)
            else:
                yield line[: len(tenant) + 3] + text

    return by_secret, _joined(head, resolved_lines(), tail)


def resolved_content(bundle: bytes, resolver: Resolver) -> ResolvedContent:
    by_secret, pieces = _resolution(bundle, resolver)
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return ResolvedContent(by_secret, "sha256:" + digest.hexdigest())


def resolved_bundle(bundle: bytes, resolver: Resolver) -> bytes:
    """The bundle as it is sent: `bundle_json(resolver(json.loads(bundle)))` for a bundle
    cdnctl compiled, made without decoding the tenants that carry no secret (at 1M
    tenants, decoding them all took about 10 GB)."""
    return b"".join(_resolution(bundle, resolver)[1])


FIND_MOST = 64  # tenants looked up one by one (by bisection) before a pass over every line


def _fragments(bundle: BundleBytes, tenants: Collection[str]) -> dict[str, bytes]:
    """The compiled texts of `tenants`: looked up one by one for a few, in one pass for many."""
    if len(tenants) <= FIND_MOST:
        found = {tenant: bundle.fragment(tenant) for tenant in tenants}
        missing = sorted(tenant for tenant, text in found.items() if text is None)
        if missing:
            raise DeltaError(f"tenant {missing[0]} of the manifest is not in the bundle")
        return {tenant: text for tenant, text in found.items() if text is not None}
    _, lines, _ = split_lines(bundle.tobytes())
    wanted = set(tenants)
    found = {}
    for line in lines:
        tenant = _line_id(line)
        if tenant in wanted:
            found[tenant] = line[len(tenant) + 3 :]
    return found


def make_delta(
    bundle: bytes | BundleBytes,
    target_manifest: bytes,
    base_manifest: bytes,
    base: str,
    *,
    resolver: Resolver | None = None,
    patched: tuple[str, Collection[str]] | None = None,
    resolved: ResolvedContent | None = None,
    checked: bool = False,
) -> Delta:
    """The delta from `base` (whose manifest is `base_manifest`) to `bundle` (compiled,
    with its manifest). With `resolver`, the delta's tenants are resolved and `content` is
    that of the resolved full bundle (`resolved`: resolved_content of this bundle with this
    resolver, when the caller has it); without, the compiled one's. `patched`: (version,
    tenants) when the bundle is that version's with only those tenants' lines replaced
    (CompileResult.patched): from that version, only their digests are compared.
    `checked`: the caller vouches that the manifests are the bundle's (a CompileResult's)
    and the base's (ManifestStore.load checks it): they are not hashed again (160 MB each
    at 1M tenants); an edge still proves the target version from its own manifest."""
    view = bundle if isinstance(bundle, BundleBytes) else BundleBytes(bundle)
    stated = view.version()
    version = stated if checked else sha256_tag(target_manifest)
    if stated is None or stated != version:
        raise DeltaError(f"the target manifest ({version}) is not this bundle's")
    if not checked and sha256_tag(base_manifest) != base:
        raise DeltaError(f"the manifest given for {base} is not that version's")
    changes = (
        _patched_changes(base_manifest, target_manifest, patched[1])
        if patched is not None and patched[0] == base
        else None
    )
    changes = (
        changes
        or _manifest_changes(base_manifest, target_manifest)
        or _decoded_changes(base_manifest, target_manifest)
    )
    changed_tenants, dropped_tenants = changes["tenants"]
    wanted = set(changed_tenants)
    texts: dict[str, bytes] = {}
    if resolver is None:  # only the lines of the tenants that differ are read
        texts = _fragments(view, wanted)
        content = view.sha256_tag()
    else:
        resolved = resolved or resolved_content(view.tobytes(), resolver)
        # Every tenant with secrets goes with the delta (a rotated secret changes no digest).
        texts = dict(resolved.secret_texts)
        rest = _fragments(view, wanted - texts.keys())
        if rest:
            compiled = {tenant: json.loads(fragment) for tenant, fragment in rest.items()}
            done = resolver({"tenants": compiled})["tenants"]
            texts.update((tenant, canonical_json(done[tenant])) for tenant in rest)
        content = resolved.content
    removed = sorted(dropped_tenants)
    document: dict[str, Any] = {
        "base": base,
        "content": content,
        "format": changes["format"],
        "removed": removed,
        "tenants": {},
        "version": version,
    }
    for kind in ("hosts", "wildcards"):
        changed, dropped = changes[kind]
        edits: dict[str, str | None] = dict(changed)
        edits.update((host, None) for host in dropped)
        document[kind] = edits
    body = _with_tenant_texts(document, texts)
    return Delta(body, base, version, content, len(texts), len(removed))


def _with_tenant_texts(document: dict[str, Any], texts: dict[str, bytes]) -> bytes:
    """bundle_json of the document with these exact tenant texts (already canonical)."""
    head, _, tail = split_lines(bundle_json(document))
    lines = (canonical_json(tenant) + b":" + texts[tenant] for tenant in sorted(texts))
    return b"".join(_joined(head, lines, tail))
