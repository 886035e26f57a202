"""Bringing one edge to a compiled bundle: a delta when we hold the manifest of the version
the edge runs (compiled here before, or read from the edge and checked against that
version), the full bundle otherwise (or when the delta would not be smaller, or the edge
refuses the delta's base), nothing when it already runs exactly these bytes.

Shared by every edge of one `cdnctl apply`: each delta base and the full resolved bundle
are made once, whichever edge asks first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cdnctl.bundle.delta import Delta, ResolvedContent, Resolver, make_delta, resolved_content
from cdnctl.bundle.format import sha256_tag
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.edge.admin_client import AdminClient, EdgeError

CONFLICT = 409


class Pusher:
    def __init__(
        self,
        bundle: bytes,
        manifest: bytes,
        version: str,
        store: ManifestStore,
        resolver: Resolver,
        full: Callable[[], bytes],
        patched: tuple[str, frozenset[str]] | None = None,
    ) -> None:
        """`patched`: CompileResult.patched (the deltas from that version compare only
        those tenants' digests)."""
        self.bundle, self.manifest, self.version = bundle, manifest, version
        self.patched = patched
        self.store, self.resolver, self._full = store, resolver, full
        self._lock = threading.Lock()
        self._deltas: dict[str, Delta | None] = {}
        self._full_bytes: bytes | None = None
        self._resolved: ResolvedContent | None = None  # one pass over the bundle, all deltas

    def delta_from(self, base: str | None, client: AdminClient | None = None) -> Delta | None:
        """The resolved delta from `base`, or None (unknown base, or not smaller). The base's
        manifest comes from the compile cache, else from the edge (`client`), checked."""
        if not base:
            return None
        with self._lock:
            if base not in self._deltas:
                manifest = self.manifest if base == self.version else self.store.load(base)
                if manifest is None and client is not None:
                    fetched = client.running_manifest()
                    if fetched is not None and sha256_tag(fetched) == base:
                        manifest = fetched
                delta = None
                if manifest is not None:
                    if self._resolved is None:
                        self._resolved = resolved_content(self.bundle, self.resolver)
                    delta = make_delta(
                        self.bundle,
                        self.manifest,
                        manifest,
                        base,
                        resolver=self.resolver,
                        resolved=self._resolved,
                        patched=self.patched,
                    )
                    if len(delta.body) >= len(self.bundle):
                        delta = None
                self._deltas[base] = delta
            return self._deltas[base]

    def full(self) -> bytes:
        with self._lock:
            if self._full_bytes is None:
                self._full_bytes = self._full()
            return self._full_bytes

    def prepare(self) -> None:
        """Resolve every secret now (the delta from the target to itself carries each tenant
        that has one): a missing secret fails before any edge is touched."""
        self.delta_from(self.version)

    def push(
        self, client: AdminClient, commit: str | None, running: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The edge's answer plus `sent`: "delta", "full" or "nothing", and `bytes`.
        An edge already running this bundle gets nothing, unless `commit` is not the one it
        records: then the delta from the bundle to itself (its tenants with secrets only,
        nothing to write) so that `GET /config` names the commit. `running`: the edge's
        `GET /config` when the caller has just read it."""
        running = running if running is not None else client.running_config()
        delta = self.delta_from(running.get("version"), client)
        if running.get("version") == self.version:
            content = delta.content if delta else sha256_tag(self.full())
            relabel = commit is not None and running.get("commit") != commit
            if running.get("content") == content and not relabel:
                return {
                    "version": self.version,
                    "previous": self.version,
                    "tenants": running.get("tenants"),
                    "changed": 0,
                    "removed": 0,
                    "sent": "nothing",
                    "bytes": 0,
                }
        if delta is not None:
            try:
                answer = client.push_delta(delta.body, commit)
                return {**answer, "sent": "delta", "bytes": len(delta.body)}
            except EdgeError as exc:
                if exc.status != CONFLICT:
                    raise
        body = self.full()
        return {**client.push_bundle(body, commit), "sent": "full", "bytes": len(body)}
