"""Compile tenant files into the bundle (see bundle.py): validate, then assemble.

Deterministic (same tenant files -> byte-identical bundle) and incremental: per-file results
come from the compile cache when the file is unchanged (in a git work tree, git says which
files changed since the last compile; elsewhere every file is stat-ed), and cache misses
are checked in parallel worker processes when there are many of them. When git says only a
few tenants' settings changed, the last bundle is patched instead (patch.py).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import mmap
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdnctl.bundle import compile_cache, patch
from cdnctl.bundle.bundle_bytes import BundleBytes
from cdnctl.bundle.compile_cache import CompileCache, GitRecord, StatKey, code_fingerprint
from cdnctl.bundle.format import BUNDLE_FORMAT, sha256_tag
from cdnctl.bundle.git_changes import GitView, changes
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.problems import Problem
from cdnctl.tenants.validate import (
    TENANT_SUFFIX,
    FileResult,
    ValidationFailed,
    check_file,
    check_fleet,
)

IGNORED_FILES = frozenset({"schema.json", "README.md", ".gitkeep"})
PARALLEL_THRESHOLD = 2000  # below this, starting worker processes costs more than it saves
SPILL_FROM = PARALLEL_THRESHOLD  # files to check from which their fragments go to the cache's
# blob as they are checked (compile_cache.FragmentSpill), not all at once after the last
BATCH = 1000  # files per task of a worker process
STREAM_FROM = 200_000  # tenants from which a bundle goes to a file, not into memory
ASK_GIT_AGAIN_FROM = 1000  # files read from which a compile in git asks git status again
DEFAULT_CACHE_DIR = Path(".cdnctl-cache")
Progress = Callable[[int], None]
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level constructor


@dataclass
class CompileResult:
    results: Sequence[FileResult]  # one per tenant file, in file order
    problems: list[Problem] = field(default_factory=list)
    version: str | None = None
    manifest: bytes | None = None  # what `version` is the SHA-256 of (bundle/format.py)
    # the bundle's bytes (bundle_bytes.py): held, or (a gigabyte at 1M tenants) the file
    # written to the cache directory and mapped, or the cache's last bundle file with the
    # lines a patched compile replaced
    bytes_of: BundleBytes | None = field(default=None, repr=False)
    # (the last version, the tenants whose lines replaced its) when the compile patched
    # the last bundle (patch.py): what make_delta(patched=) needs to compare no more
    patched: tuple[str, frozenset[str]] | None = None
    # a patched compile's results of the files it read (its replaced tenants): what changed,
    # without reading `results` (every cached result)
    edited: tuple[FileResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bundle(self) -> bytes | None:
        """The bundle's bytes (joined or copied out of the file when it is not held in one
        object: prefer `bundle_view` for large bundles)."""
        return self.bytes_of.tobytes() if self.bytes_of is not None else None

    @bundle.setter
    def bundle(self, value: bytes | None) -> None:
        self.bytes_of = BundleBytes(value) if value is not None else None

    @property
    def bundle_view(self) -> BundleBytes | None:
        """The bundle without copying it (write it, hash it, `make_delta` it)."""
        return self.bytes_of


def tenant_files(paths: Sequence[Path]) -> tuple[list[str], list[Problem]]:
    """Expand PATH arguments (directories or files) into tenant file paths, sorted."""
    files: list[str] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            prefix = os.path.join(str(path), "")
            with os.scandir(path) as entries:
                for entry in entries:
                    name = entry.name
                    if name in IGNORED_FILES or name.startswith("."):
                        continue
                    if name.endswith(TENANT_SUFFIX):
                        files.append(prefix + name)
                    elif name.lower().endswith((".yml", ".yaml")):
                        problems.append(_wrong_suffix(path / name))
        elif path.is_file():
            if path.name.endswith(TENANT_SUFFIX):
                files.append(str(path))
            else:
                problems.append(_wrong_suffix(path))
        else:
            problems.append(Problem(str(path), "", "no such file or directory", "check the path"))
    files.sort()
    return files, problems


MISNAMED = "tenant files must be named <id>.yaml"


def _wrong_suffix(path: Path) -> Problem:
    return Problem(
        str(path),
        "",
        MISNAMED,
        f"rename it to {path.name.rsplit('.', 1)[0]}.yaml",
    )


def check_tenants(
    paths: Sequence[Path],
    policy: Policy,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    assemble: bool = False,
    changed: Collection[str] = frozenset(),
    checkout_clean: bool = False,
) -> CompileResult:
    """Validate every tenant file under `paths`; with `assemble`, build the bundle when valid.

    Incremental at two levels: file results come from the cache when the file is unchanged,
    and when no tenant id or domain changed since a compile that had no fleet-wide
    problems, the fleet check and the host indexes of the bundle are reused as well.
    `checkout_clean`: the caller vouches that the tenants' git work tree holds exactly
    HEAD's files (git_changes.py).
    """
    started_ns = time.time_ns()
    cache = CompileCache(cache_dir, f"{code_fingerprint()}-{policy.fingerprint()}")
    git = GitView.of(paths[0]) if cache_dir and len(paths) == 1 and paths[0].is_dir() else None
    fits = _git_record_fits(cache, git)
    # git status runs meanwhile where the last compile's record says what else to read;
    # without one every file is read, and git status is asked once they are (_still_to_check)
    status = git.status() if git is not None and fits and not checkout_clean else None
    diff = git.diff(cache.git.head if fits and cache.git else git.head) if git else None
    # the last bundle and its manifest, read while git compares the commits
    last = _last_bundle(cache, cache_dir) if assemble and diff and fits and cache_dir else None
    committed = diff.names() if diff else None

    def dirty() -> set[str] | None:
        return status.dirty() if status is not None else set()

    stat_keys: dict[str, StatKey] = {}  # the stats the patched compile took
    if git is not None and committed is not None and last is not None and cache_dir is not None:
        patched = _patched_compile(
            paths[0], policy, cache, cache_dir, git, committed, dirty, stat_keys, last
        )
        if patched is not None:
            return patched
    seen = changes(committed, dirty()) if git else None
    if fits and not cache.index and not _git_record_fits(cache, git):
        # (reading every entry) they were corrupt, and the cache is empty: ask git anew
        fits, seen = False, changes(set(), dirty()) if git else None
    listing = _git_listing(paths[0], cache, seen[0]) if seen and fits else None
    if listing is None:
        files, problems = tenant_files(paths)
        suspects: Sequence[str] = files  # every file is stat-ed
        known: list[str] = []
    else:
        files, problems, suspects, known = listing
    results: dict[str, FileResult] = dict(zip(known, cache.results_of(known), strict=True))
    unchanged: list[str] = list(known)  # cache entries kept as they are
    fresh: dict[str, tuple[StatKey, bytes, FileResult]] = {}  # new or updated entries
    index = cache.index
    # a file the cache does not know is not stat-ed here: its checker takes the stat of
    # the file it opens (100k stats of a cold compile, in the workers)
    misses: list[str] = [display for display in suspects if display not in index]
    stats = [(d, stat_keys.get(d) or _stat_key(d)) for d in suspects if d in index]
    for (display, key), hit in zip(stats, cache.lookup_all(stats), strict=True):
        if hit is not None:
            results[display] = hit
            unchanged.append(display)
            continue
        digest = _sha256_of(display)
        reused = cache.by_content(display, digest)
        if reused is None:
            misses.append(display)
            continue
        results[display] = reused
        if cache.stat_of(display) == key:
            unchanged.append(display)
        else:
            fresh[display] = (key, digest, reused)  # same content, new stat: remember it
    if progress:
        progress(len(results))
    claims_changed = results.keys() | set(misses) != index.keys()
    spill = cache.spill() if len(misses) >= SPILL_FROM else None
    try:
        checked = _check_many(misses, policy, progress, str(spill.path) if spill else None)
        for display, (key, digest, result, position, length) in zip(misses, checked, strict=True):
            results[display] = result
            fresh[display] = (key, digest, result)
            if spill is not None:
                spill.add(display, key, digest, result, position, length)
            claims_changed = claims_changed or cache.claims_of(display) != (
                result.tenant_id,
                result.domains,
            )
        if spill is not None:
            _with_spilled_fragments(spill, results, fresh)
    except BaseException:
        if spill is not None:
            spill.discard()
        raise
    ordered = [results[display] for display in files]
    for result in ordered:
        problems.extend(result.problems)
    reuse_fleet = cache.fleet_clean and not claims_changed
    fleet_problems = [] if reuse_fleet else check_fleet(ordered, changed)
    problems.extend(fleet_problems)
    compiled = CompileResult(
        ordered, sorted(problems, key=lambda p: (p.file, p.line or 0, p.field))
    )
    indexes = cache.indexes if reuse_fleet else None
    entries_changed = bool(fresh) or len(unchanged) != len(cache.index)
    bundle = None if entries_changed else cache.bundle  # still that of exactly the entries
    if assemble and compiled.ok:
        pieces, compiled.version, indexes, compiled.manifest = bundle_pieces(ordered, indexes)
        if cache_dir is not None and (git is not None or len(ordered) >= STREAM_FROM):
            # kept for the next compile to patch (patch.py), and never joined in memory
            bundle = cache.write_bundle(compiled.version, pieces, len(ordered))
            mapped = cache.read_bundle(bundle)
            if mapped is not None:
                compiled.bytes_of = BundleBytes(mapped)
        if compiled.bytes_of is None:
            compiled.bundle = b"".join(pieces)
        del pieces  # (a line head per tenant: 70 MB at 1M, not held through the save)
        if cache_dir is not None:
            ManifestStore(cache_dir).save(compiled.version, compiled.manifest)
    record = None
    if git is not None and seen is not None:
        to_check = _still_to_check(
            git, paths[0], seen[1], fresh, started_ns, asked=status is not None,
            checkout_clean=checkout_clean,
        )  # fmt: skip
        if to_check is not None:
            record = GitRecord(
                git.top,
                str(paths[0]),
                git.head,
                to_check,
                tuple(sorted(p.file for p in problems if p.reason == MISNAMED)),
            )
    if (
        entries_changed
        or not reuse_fleet
        or indexes != cache.indexes
        or record != cache.git
        or bundle != cache.bundle
    ):
        cache.save(
            unchanged,
            fresh,
            fleet_clean=not fleet_problems,
            indexes=indexes,
            git=record,
            bundle=bundle,
            spill=spill,
        )
    elif spill is not None:
        spill.discard()
    return compiled


def _patched_compile(
    directory: Path,
    policy: Policy,
    cache: CompileCache,
    cache_dir: Path,
    git: GitView,
    committed: set[str],
    dirty: Callable[[], set[str] | None],
    stat_keys: dict[str, StatKey],
    last_bundle: tuple[mmap.mmap | bytes, bytes],
) -> CompileResult | None:
    """The compile as a patch of the last bundle (patch.py), or None when it cannot be one:
    files added, removed or misnamed, domains changed, problems, or no last bundle. `dirty`
    (git status, running meanwhile) is waited for before anything is saved: files it names
    that the patch did not read are patched in as well. `last_bundle`: `_last_bundle`."""
    last, record = cache.bundle, cache.git
    if last is None or record is None:
        return None
    prefix = os.path.join(str(directory), "")
    suspects: list[str] = []
    names = committed | {display[len(prefix) :] for display in record.dirty}
    for name in sorted(names):
        if name in IGNORED_FILES or name.startswith("."):
            continue
        if not name.endswith(TENANT_SUFFIX):
            if name.lower().endswith((".yml", ".yaml")):
                return None  # misnamed: a problem to report
            continue
        if not os.path.lexists(prefix + name):
            return None  # removed
        suspects.append(prefix + name)
    if len(suspects) > patch.MAX_FILES:
        return None
    manifests = ManifestStore(cache_dir)
    data, manifest = last_bundle
    stat_keys.update((d, _stat_key(d)) for d in suspects if d not in stat_keys)
    stats = [(display, stat_keys[display]) for display in suspects]
    edited: list[FileResult] = []
    fresh: dict[str, tuple[StatKey, bytes, FileResult]] = {}
    for (display, key), hit in zip(stats, cache.lookup_all(stats, recent=True), strict=True):
        if hit is None:
            _, digest, hit = _read_and_check(display, policy)
            if not cache.holds(display, key, digest):
                fresh[display] = (key, digest, hit)
        if hit.problems:
            return None
        edited.append(hit)
    patched = patch.patch_bundle(data, last, manifest, edited)
    if patched is None:
        return None
    bundle = BundleBytes(data, patched.patches)  # not joined: a gigabyte at 1M tenants
    now_dirty = dirty()
    if now_dirty is None:
        return None
    if not now_dirty <= names:  # the work tree changed more files: patch those too
        return _patched_compile(
            directory, policy, cache, cache_dir, git, committed | now_dirty, lambda: now_dirty,
            stat_keys, last_bundle,
        )  # fmt: skip
    manifests.save(patched.version, patched.manifest)
    if patched.patch_bytes > patch.MAX_PATCH_BYTES:  # start from a file of this bundle
        kept = cache.write_bundle(patched.version, bundle.pieces(), last.tenants)
    else:
        kept = last._replace(version=patched.version, patches=patched.patches)
    git_record = GitRecord(
        git.top,
        str(directory),
        git.head,
        tuple(sorted({prefix + name for name in now_dirty} | fresh.keys())),
        (),
    )
    if (fresh or git_record != cache.git or kept != last) and not cache.append(
        fresh, git=git_record, bundle=kept
    ):
        unchanged = [display for display in cache.index if display not in fresh]
        cache.save(
            unchanged,
            fresh,
            fleet_clean=True,
            indexes=cache.indexes,
            git=git_record,
            bundle=kept,
        )
    results = LazyResults(last.tenants, lambda: _results_after(cache, fresh, directory, policy))
    replaced = frozenset(result.tenant_id or "" for result in edited)
    return CompileResult(
        results,
        [],
        patched.version,
        patched.manifest,
        bytes_of=bundle,
        patched=(last.version, replaced),
        edited=tuple(edited),
    )


def _last_bundle(cache: CompileCache, cache_dir: Path) -> tuple[mmap.mmap | bytes, bytes] | None:
    """(the file of the last bundle, mapped; its manifest) when a compile may patch it
    (patch.py): it was assembled from exactly the cache's entries, with no problem."""
    last, record = cache.bundle, cache.git
    if last is None or record is None or record.misnamed or not cache.fleet_clean:
        return None
    data, manifest = cache.read_bundle(last), ManifestStore(cache_dir).load(last.version)
    return (data, manifest) if data is not None and manifest is not None else None


def _results_after(
    cache: CompileCache,
    fresh: dict[str, tuple[StatKey, bytes, FileResult]],
    directory: Path,
    policy: Policy,
) -> list[FileResult]:
    """The results of a patched compile: the cached ones with the fresh ones over them."""
    others = sorted(display for display in cache.index if display not in fresh)
    if not others and not cache.index:  # the cache's entries turned out corrupt
        return list(check_tenants([directory], policy).results)
    results = dict(zip(others, cache.results_of(others), strict=True))
    results.update((display, result) for display, (_, _, result) in fresh.items())
    return [results[display] for display in sorted(results)]


class LazyResults(Sequence[FileResult]):
    """Results made only when something reads them (a patched compile's consumers mostly
    need the bundle and the count)."""

    def __init__(self, count: int, make: Callable[[], list[FileResult]]) -> None:
        self._count, self._make = count, make
        self._items: list[FileResult] | None = None

    def _all(self) -> list[FileResult]:
        if self._items is None:
            self._items = self._make()
        return self._items

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        return self._all()[index]

    def __iter__(self) -> Iterator[FileResult]:
        return iter(self._all())


def _still_to_check(
    git: GitView,
    directory: Path,
    dirty: set[str],
    fresh: dict[str, tuple[StatKey, bytes, FileResult]],
    started_ns: int,
    *,
    asked: bool,
    checkout_clean: bool,
) -> tuple[str, ...] | None:
    """The files the next compile reads again whatever git says then (GitRecord.dirty), or
    None when git cannot say: those git status named (`dirty`, if it was `asked` before
    the reads), and those this compile read (`fresh`) unless it is known that what it read
    is HEAD's content. A status taken before the reads misses a file written between the
    two and put back to HEAD's content later. So a few files read after such a status are
    simply listed (the next compile stats them); from ASK_GIT_AGAIN_FROM on, and always
    when git status was not asked before (no record of a last compile: every file was read,
    and listing them all would make the next compile stat every file), git status is asked
    now, and a file read counts as HEAD's when that status finds it clean and its stat,
    taken after it, is still the one it was read with, from a write a second or more
    before this compile began (`started_ns`): then the bytes read are the bytes git saw,
    even where file times are as coarse as a clock tick. A clean checkout
    (`checkout_clean`) holds HEAD's content by the caller's word."""
    prefix = os.path.join(str(directory), "")
    names = {prefix + name for name in dirty}
    if checkout_clean:
        return tuple(sorted(names))
    if asked and len(fresh) < ASK_GIT_AGAIN_FROM:
        return tuple(sorted(names | fresh.keys()))
    now = git.status().dirty()
    if now is None:
        return tuple(sorted(names | fresh.keys())) if asked else None
    names.update(prefix + name for name in now)
    settled = started_ns - 1_000_000_000
    for display, (key, _, _) in fresh.items():
        if display not in names and (key[1] >= settled or _stat_key_if_any(display) != key):
            names.add(display)
    return tuple(sorted(names))


def _git_record_fits(cache: CompileCache, git: GitView | None) -> bool:
    record = cache.git
    return bool(git and record and record.top == git.top and record.directory == str(git.directory))


def _git_listing(
    directory: Path, cache: CompileCache, changed: set[str]
) -> tuple[list[str], list[Problem], list[str], list[str]] | None:
    """(files, misnamed-file problems, files to stat, files git says are unchanged) from the
    last compile's listing and what changed since (see git_changes.py)."""
    record = cache.git
    if record is None:
        return None
    prefix = os.path.join(str(directory), "")
    files, misnamed = set(cache.index), set(record.misnamed)  # the index: every tenant file
    suspects: set[str] = set()
    names = changed | {display[len(prefix) :] for display in record.dirty}
    for name in names:
        display = prefix + name
        files.discard(display)
        misnamed.discard(str(directory / name))
        if name in IGNORED_FILES or name.startswith(".") or not os.path.lexists(display):
            continue
        if name.endswith(TENANT_SUFFIX):
            files.add(display)
            suspects.add(display)
        elif name.lower().endswith((".yml", ".yaml")):
            misnamed.add(str(directory / name))
    known = [display for display in files if display not in suspects]
    return (
        sorted(files),
        [_wrong_suffix(Path(path)) for path in sorted(misnamed)],
        sorted(suspects),
        known,
    )


def _stat_key(path: str) -> StatKey:
    stat = os.stat(path)
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _stat_key_if_any(path: str) -> StatKey | None:
    try:
        return _stat_key(path)
    except OSError:
        return None


def _sha256_of(path: str) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).digest()


def _check_many(
    paths: list[str], policy: Policy, progress: Progress | None, spill: str | None = None
) -> Iterable[tuple[StatKey, bytes, FileResult, int, int]]:
    """(stat, content sha256, result, fragment position, its length) per path; in worker
    processes when there are many. `spill`: a spill file (compile_cache.FragmentSpill) the
    fragments are appended to where they are checked, and not sent back (their position
    is: -1 for none)."""
    if not paths:
        return
    with _cycle_collection(True):
        if len(paths) < PARALLEL_THRESHOLD or (os.cpu_count() or 1) < 2:
            step = 100 if spill else 1  # (a spill file takes one write per batch)
            for at in range(0, len(paths), step):
                batch = _check_batch(paths[at : at + step], policy, spill)
                for stat, digest, fields, position, length in batch:
                    yield stat, digest, _new_tuple(FileResult, fields), position, length
                if progress:
                    progress(len(batch))
            return
        batches = [paths[i : i + BATCH] for i in range(0, len(paths), BATCH)]
        count = len(batches)
        with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 2, 8)) as pool:
            for batch in pool.map(_check_batch, batches, [policy] * count, [spill] * count):
                for stat, digest, fields, position, length in batch:
                    yield stat, digest, _new_tuple(FileResult, fields), position, length
                if progress:
                    progress(len(batch))


def _read_and_check(path: str, policy: Policy) -> tuple[StatKey, bytes, FileResult]:
    """(the stat of the file as opened, before it is read: a later edit changes it; the
    content's sha256; the result)."""
    fd = os.open(path, os.O_RDONLY)  # (os-level calls: half the cost of open() per file)
    try:
        stat = os.fstat(fd)
        raw = os.read(fd, stat.st_size + 1)
        if len(raw) != stat.st_size:  # it changed since: read to the end
            chunks = [raw]
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            raw = b"".join(chunks)
    finally:
        os.close(fd)
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return key, hashlib.sha256(raw).digest(), check_file(path, raw, policy)


def _check_batch(
    paths: list[str], policy: Policy, spill: str | None
) -> list[tuple[StatKey, bytes, tuple, int, int]]:
    """`_check_many`'s items for `paths`, results as plain tuples: unpickling 100k
    NamedTuples runs their Python __new__. With `spill`, fragments are appended there in
    one write and their results carry None instead."""
    checked = [_read_and_check(path, policy) for path in paths]
    if spill is None:
        return [(key, digest, tuple(result), -1, 0) for key, digest, result in checked]
    fragments = [result.fragment for _, _, result in checked if result.fragment is not None]
    position = compile_cache.append_fragments(spill, fragments) if fragments else 0
    out = []
    for key, digest, result in checked:
        if result.fragment is None:
            out.append((key, digest, tuple(result), -1, 0))
            continue
        length = len(result.fragment)
        out.append((key, digest, (*result[:3], None, *result[4:]), position, length))
        position += length
    return out


def _with_spilled_fragments(
    spill: compile_cache.FragmentSpill,
    results: dict[str, FileResult],
    fresh: dict[str, tuple[StatKey, bytes, FileResult]],
) -> None:
    """Give the results of spilled files their fragments, as views of the spill file."""
    for display, result in spill.results():
        results[display] = result
        fresh[display] = (*fresh[display][:2], result)


def assemble_bundle(
    results: Sequence[FileResult], indexes: tuple[bytes, bytes] | None = None
) -> tuple[bytes, str, tuple[bytes, bytes], bytes]:
    """The canonical bundle bytes, its version (see format.py), its (hosts, wildcards) JSON
    and its manifest (`bundle_pieces`, joined)."""
    pieces, version, indexes, manifest = bundle_pieces(results, indexes)
    return b"".join(pieces), version, indexes, manifest


def bundle_pieces(
    results: Sequence[FileResult], indexes: tuple[bytes, bytes] | None = None
) -> tuple[list[bytes | memoryview], str, tuple[bytes, bytes], bytes]:
    """The canonical bundle in pieces (to join or to write out), its version (see
    format.py), its (hosts, wildcards) JSON and its manifest.

    Tenant fragments are already canonical JSON, so the document is assembled by joining
    them in id order rather than re-serialising every tenant: the same bytes `bundle_json`
    would produce, at a fraction of the cost. (Tenant ids match
    TENANT_ID_PATTERN, so they need no JSON escaping.) `indexes` from an earlier compile
    with the same ids and domains are reused as they are.
    """
    valid = [r for r in results if r.tenant_id is not None and r.fragment is not None]
    valid.sort(key=_tenant_id)
    if indexes is None:
        hosts: dict[str, str] = {}
        wildcards: dict[str, str] = {}
        for result in valid:
            tenant = result.tenant_id or ""
            for domain in result.domains:
                if domain.startswith("*."):
                    wildcards[domain[2:]] = tenant
                else:
                    hosts[domain] = tenant
        indexes = (_index_json(hosts), _index_json(wildcards))
    # (list comprehensions and slice assignment: a loop of appends took twice as long)
    tenant_parts: list[bytes | memoryview] = [b""] * (2 * len(valid))
    tenant_parts[0::2] = [f',\n"{result.tenant_id}":'.encode() for result in valid]
    tenant_parts[1::2] = [result.fragment or b"" for result in valid]
    if tenant_parts:
        tenant_parts[0] = tenant_parts[0][1:]  # no comma before the first tenant
    tenant_parts.append(b"\n")
    # (the host indexes, 80 MB at 1M tenants, as pieces: not copied into a head and a tail)
    head = [b'{"format":' + str(BUNDLE_FORMAT).encode() + b',"hosts":', indexes[0]]
    tail = [b',"wildcards":', indexes[1], b"}"]
    members = _joined(",", (f'"{result.tenant_id}":"{result.digest}"' for result in valid))
    manifest = b"".join([*head, b',"tenants":{', members, b"}", *tail])
    version = sha256_tag(manifest)
    tenant_parts[:0] = [*head, b',"tenants":{']
    tenant_parts.extend([b'},"version":"', version.encode(), b'"', *tail])
    return tenant_parts, version, indexes, manifest


def _tenant_id(result: FileResult) -> str:
    return result.tenant_id or ""


def _index_json(index: dict[str, str]) -> bytes:
    """Canonical JSON of a name -> tenant id index.

    Validated domains and ids are plain ASCII ([a-z0-9.*-]) that JSON never escapes, so
    they are written directly; this is ~5x faster than json.dumps at 100k+ names.
    """
    members = _joined(",", (f'"{name}":"{index[name]}"' for name in sorted(index)))
    return b"".join([b"{", members, b"}"])


_JOIN_EVERY = 1 << 16  # texts joined at a time (`_joined`)


def _joined(separator: str, texts: Iterator[str]) -> bytes:
    """separator.join(texts), encoded (ASCII), a slice of texts at a time: the list of every
    text (2M host names at 1M tenants: 160 MB), their join and its encoding are never all
    held at once."""
    parts: list[bytes] = []
    while chunk := list(itertools.islice(texts, _JOIN_EVERY)):
        parts.append(separator.join(chunk).encode())
    return separator.encode().join(parts)


def compile_paths(
    paths: Sequence[Path],
    policy: Policy,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    changed: Collection[str] = frozenset(),
    checkout_clean: bool = False,
) -> CompileResult:
    """Validate, and when everything is valid, assemble the bundle. `checkout_clean`: the
    tenants' git work tree holds exactly HEAD's files, as after a `git checkout --force`
    nothing else writes into (the sync loop's clone): git status is not asked."""
    with _cycle_collection(False):
        return check_tenants(
            paths,
            policy,
            cache_dir=cache_dir,
            progress=progress,
            assemble=True,
            changed=changed,
            checkout_clean=checkout_clean,
        )


@contextlib.contextmanager
def _cycle_collection(on: bool) -> Iterator[None]:
    """Off for a compile: it makes a few hundred thousand long-lived objects (cache entries,
    results) and no reference cycles worth collecting, and the cycle collector would walk
    them again and again while they are made (about a fifth of a warm 100k compile's CPU).
    On again while files are validated (pydantic's errors do make cycles), in worker
    processes too (they inherit the setting)."""
    enabled = gc.isenabled()
    if on:
        gc.enable()
    else:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        else:
            gc.disable()


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
