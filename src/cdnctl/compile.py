"""Compile tenant files into the bundle (see bundle.py): validate, then assemble.

Deterministic (same tenant files -> byte-identical bundle) and incremental: per-file results
come from the compile cache when the file is unchanged, and cache misses are checked in
parallel worker processes when there are many of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdnctl.bundle import BUNDLE_FORMAT, sha256_tag
from cdnctl.compile_cache import CacheEntry, CompileCache, code_fingerprint, stat_key
from cdnctl.policy import Policy
from cdnctl.problems import Problem
from cdnctl.validate import (
    TENANT_SUFFIX,
    FileResult,
    ValidationFailed,
    check_file,
    check_fleet,
)

IGNORED_FILES = frozenset({"schema.json", "README.md", ".gitkeep"})
PARALLEL_THRESHOLD = 2000  # below this, starting worker processes costs more than it saves
DEFAULT_CACHE_DIR = Path(".cdnctl-cache")
Progress = Callable[[int], None]


@dataclass
class CompileResult:
    results: list[FileResult]
    problems: list[Problem] = field(default_factory=list)
    bundle: bytes | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def tenant_files(paths: Sequence[Path]) -> tuple[list[Path], list[Problem]]:
    """Expand PATH arguments (directories or files) into tenant files, sorted."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name in IGNORED_FILES or entry.name.startswith("."):
                        continue
                    if entry.name.endswith(TENANT_SUFFIX) and entry.is_file():
                        files.append(path / entry.name)
                    elif entry.name.endswith((".yml", ".YAML", ".Yaml")):
                        problems.append(_wrong_suffix(path / entry.name))
        elif path.is_file():
            if path.name.endswith(TENANT_SUFFIX):
                files.append(path)
            else:
                problems.append(_wrong_suffix(path))
        else:
            problems.append(Problem(str(path), "", "no such file or directory", "check the path"))
    files.sort()
    return files, problems


def _wrong_suffix(path: Path) -> Problem:
    return Problem(
        str(path),
        "",
        "tenant files must be named <id>.yaml",
        f"rename it to {path.name.rsplit('.', 1)[0]}.yaml",
    )


def check_tenants(
    paths: Sequence[Path],
    policy: Policy,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> CompileResult:
    """Validate every tenant file under `paths` (file results cached by content)."""
    files, problems = tenant_files(paths)
    cache = CompileCache(cache_dir, f"{code_fingerprint()}-{policy.fingerprint()}")
    entries: dict[str, CacheEntry] = {}
    results: dict[str, FileResult] = {}
    misses: list[tuple[str, bytes, tuple[int, int, int], bytes]] = []
    for path in files:
        display = str(path)
        stat = path.stat()
        hit = cache.lookup(display, stat)
        if hit is not None:
            entries[display], results[display] = hit, hit.result
            continue
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).digest()
        reused = cache.by_content(display, digest)
        if reused is not None:
            entries[display] = CacheEntry(stat_key(stat), digest, reused)
            results[display] = reused
        else:
            misses.append((display, raw, stat_key(stat), digest))
    if progress:
        progress(len(results))
    for (display, _, stat, digest), result in zip(
        misses, _check_many([(d, raw) for d, raw, _, _ in misses], policy, progress), strict=True
    ):
        entries[display] = CacheEntry(stat, digest, result)
        results[display] = result
    if misses or len(entries) != len(cache.entries):
        cache.save(entries)
    ordered = [results[str(path)] for path in files]
    for result in ordered:
        problems.extend(result.problems)
    problems.extend(check_fleet(ordered))
    return CompileResult(ordered, sorted(problems, key=lambda p: (p.file, p.line or 0, p.field)))


def _check_many(
    items: list[tuple[str, bytes]], policy: Policy, progress: Progress | None
) -> Iterable[FileResult]:
    if len(items) < PARALLEL_THRESHOLD or (os.cpu_count() or 1) < 2:
        for display, raw in items:
            yield check_file(display, raw, policy)
            if progress:
                progress(1)
        return
    chunk = 500
    batches = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 2, 8)) as pool:
        for batch in pool.map(_check_batch, batches, [policy] * len(batches)):
            yield from batch
            if progress:
                progress(len(batch))


def _check_batch(batch: list[tuple[str, bytes]], policy: Policy) -> list[FileResult]:
    return [check_file(display, raw, policy) for display, raw in batch]


def assemble_bundle(results: Sequence[FileResult]) -> tuple[bytes, str]:
    """The canonical bundle bytes and version from valid file results.

    Tenant fragments are already canonical JSON, so the document is assembled by joining
    them in id order rather than re-serialising every tenant: the same bytes
    `canonical_json` would produce, at a fraction of the cost.
    """
    by_id = sorted(
        (result.tenant_id, result.fragment, result.domains)
        for result in results
        if result.tenant_id is not None and result.fragment is not None
    )
    hosts: dict[str, str] = {}
    wildcards: dict[str, str] = {}
    for tenant_id, _, domains in by_id:
        for domain in domains:
            if domain.startswith("*."):
                wildcards[domain[2:]] = tenant_id
            else:
                hosts[domain] = tenant_id
    tenants = (
        b"{"
        + b",".join(
            json.dumps(tenant_id).encode() + b":" + fragment for tenant_id, fragment, _ in by_id
        )
        + b"}"
    )
    hosts_json = _dump(hosts)
    wildcards_json = _dump(wildcards)
    head = b'{"format":' + str(BUNDLE_FORMAT).encode() + b',"hosts":' + hosts_json
    body = b',"tenants":' + tenants
    version = sha256_tag(head + body + b',"wildcards":' + wildcards_json + b"}")
    bundle = head + body + b',"version":' + json.dumps(version).encode()
    return bundle + b',"wildcards":' + wildcards_json + b"}", version


def _dump(mapping: dict[str, Any]) -> bytes:
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def compile_paths(
    paths: Sequence[Path],
    policy: Policy,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> CompileResult:
    """Validate, and when everything is valid, assemble the bundle."""
    result = check_tenants(paths, policy, cache_dir=cache_dir, progress=progress)
    if result.ok:
        result.bundle, result.version = assemble_bundle(result.results)
    return result


def compile_tenants(
    directory: Path,
    *,
    allow_private_origins: bool = False,
    policy: Policy | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """The bundle of a tenants directory as a dict; raises ValidationFailed when invalid."""
    if policy is None:
        policy = Policy(allow_private_origins=allow_private_origins)
    elif allow_private_origins and not policy.allow_private_origins:
        policy = policy.model_copy(update={"allow_private_origins": True})
    result = compile_paths([directory], policy, cache_dir=cache_dir)
    if not result.ok or result.bundle is None:
        raise ValidationFailed(result.problems)
    return json.loads(result.bundle)
