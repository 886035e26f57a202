"""The incremental compile cache: per file, the result of `check_file`, keyed by content.

Like git's index, a file whose (size, mtime, inode) is unchanged is not even read again
(and in a git work tree, a file git says is unchanged is not even stat-ed: git_changes.py);
a file whose stat changed is read and hashed, and its old result is reused when the
content is the same. Entries are only valid for one policy and one build of cdnctl (the
fingerprint), and a file modified within the cache's own timestamp granularity is always
re-read, so an edit can never be missed.

The index is `marshal`-ed (plain tuples and strings: no code can hide in it) and holds
offsets into a blob of compiled fragments, so fragments are sliced out of one buffer
instead of rebuilt. Its small state (what git said, the last bundle assembled from exactly
these entries) comes first; the host indexes (80 MB at 1M tenants) and the entries (0.3 s
to unmarshal at 100k) follow, each unmarshalled only when a compile asks for it: a compile
that patches the last bundle (bundle/patch.py) asks for neither. The blob is mapped, not
read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import marshal
import mmap
import os
import secrets
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import BinaryIO, NamedTuple

import cdnctl
from cdnctl.bundle.mapped_files import map_file, write_releasing
from cdnctl.tenants.problems import Problem
from cdnctl.tenants.validate import FileResult

INDEX_NAME = "compile-cache.index"
JOURNAL_NAME = "compile-cache.journal"  # changes to the index since it was written
BLOB_PREFIX = "compile-cache.blob."
SPILL_PREFIX = "compile-cache.spill."  # a blob being written while files are checked
_SPILL_STALE_S = 24 * 3600  # one left by a compile that never saved (killed) goes then
BUNDLE_PREFIX = "compile-cache.bundle."  # the last bundle assembled (BundleRecord)
LOCK_NAME = "compile-cache.lock"
_RACY_WINDOW_NS = 2_000_000_000
COMPACT_SLACK = 1 << 20  # garbage tolerated in the blob beyond as much as is live
JOURNAL_SLACK = 1 << 20  # journal tolerated beyond an eighth of the index
_FORMAT = 11
_LENGTH = struct.Struct("<Q")
_SAME = "same"  # in a journal record: this part of the state did not change
_FOLLOWS = "follows"  # in the index's state: the host indexes follow it, marshalled apart
# marshal format 2 for the index's entries: from 3 on, marshal files every object it meets
# that something else also references (each entry's id, domains, digest: held by the
# results too) in a table to write it once, which took 1.3 s of a 300k-entry save against
# 0.1 s without, for a few percent more bytes
_NO_REFS = 2
_new_tuple = tuple.__new__

StatKey = tuple[int, int, int]  # size, mtime_ns, inode


class GitRecord(NamedTuple):
    """What the last compile of a directory in a git work tree knew: the work tree and the
    directory (as named on the command line), the commit HEAD named, the files that were
    dirty (or read) then, and the wrongly named files it listed (its tenant files are the
    index's)."""

    top: str
    directory: str
    head: str
    dirty: tuple[str, ...]
    misnamed: tuple[str, ...]


class BundleRecord(NamedTuple):
    """The bundle the last assembling compile made from exactly the index's entries (every
    file valid, no fleet problem): the file `name` (`size` bytes) with `patches` applied,
    each (start, end, text): its bytes [start, end) read as text now (bundle/patch.py)."""

    version: str
    name: str
    size: int
    tenants: int
    patches: tuple[tuple[int, int, bytes], ...] = ()


# The modules whose code decides what `check_file` returns for a file. A change to any of
# them invalidates every cached result; add a module here when check_file starts using it.
RESULT_MODULES = (
    "bundle",
    "bundle.compile_cache",
    "bundle.format",
    "bundle.mapped_files",
    "tenants",
    "tenants.canonical",
    "tenants.domains",
    "tenants.durations",
    "tenants.effective",
    "tenants.model",
    "tenants.origins",
    "tenants.policy",
    "tenants.problems",
    "tenants.validate",
    "tenants.yaml_loader",
)


def code_fingerprint() -> str:
    """Hash of the sources that shape a file's result: a new build never trusts an old cache."""
    digest = hashlib.sha256()
    package = Path(cdnctl.__file__).parent
    for name in RESULT_MODULES:
        source = package.joinpath(*name.split("."))
        source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
        digest.update(name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


class FragmentSpill:
    """A new blob, written while the files are still being checked: each batch of checked
    files appends its fragments (`append_fragments`, in the worker process that checked
    them) and the compile records their entries (`add`). A cold compile of 1M tenants then
    does not write 1 GB of fragments after the last file, on one core, nor holds them:
    `fragment_view` maps them from the file. `CompileCache.save(spill=...)` makes it the
    cache's blob; until then it has a name no other compile uses or removes."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        self.name = f"{BLOB_PREFIX}{token}"  # its name once saved
        self.path = directory / f"{SPILL_PREFIX}{token}"
        self.path.touch(exist_ok=False)
        self.entries: dict[str, tuple] = {}  # display -> its index entry, fragment here
        self._view: memoryview | None = None

    def add(
        self, display: str, stat: StatKey, content_sha256: bytes, result: FileResult,
        position: int, length: int,
    ) -> None:  # fmt: skip
        """Record the entry of a file whose fragment was appended at `position`."""
        self.entries[display] = _entry(stat, content_sha256, result, position, length)

    def fragment_view(self) -> memoryview:
        """The fragments written (once every batch is in: the file mapped)."""
        if self._view is None:
            self._view = memoryview(map_file(self.path))
        return self._view

    def results(self) -> Iterator[tuple[str, FileResult]]:
        """(display, result) of each spilled file that has a fragment, the fragment a view
        of the file (as a cached result's is of the blob): once every batch is in."""
        view = self.fragment_view()
        for display, entry in self.entries.items():
            if entry[4] >= 0:
                yield display, _to_result(view, display, entry)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def append_fragments(path: str, fragments: list[bytes]) -> int:
    """Append the fragments to the spill file at `path` in one write, from any process
    (O_APPEND: each write lands whole at the end, whoever else appends); where they
    begin."""
    data = b"".join(fragments)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{path}: short write ({written} of {len(data)} bytes): disk full?")
        return os.lseek(fd, 0, os.SEEK_CUR) - written
    finally:
        os.close(fd)


class CompileCache:
    """Three files in the cache directory: the index (rewritten atomically), a journal of
    the changes made to it since (appended: a one-file change adds one small record instead
    of rewriting an index of 100k entries), and an append-only blob of fragments they point
    into, so a one-file change appends one fragment instead of rewriting 100 MB. The index
    is written again (and the journal dropped) once the journal outgrows an eighth of it,
    the blob is compacted once it is mostly garbage. Saves hold a lock so concurrent
    compiles cannot interleave their appends."""

    def __init__(self, directory: Path | None, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        # display -> (stat, sha256, tenant id, domains, fragment offset, length, problems,
        #             tenant digest); unmarshalled on first use (`index`)
        self._index: dict[str, tuple] | None = {}
        self._entries = memoryview(b"")  # the index file's marshalled entries
        self._overlay: dict[str, tuple | None] = {}  # the journal's changes to them
        self.blob = memoryview(b"")
        self.blob_name: str | None = None
        self.written_at_ns = 0
        self.fleet_clean = False  # the last compile found no fleet-wide problem
        # its (hosts, wildcards) JSON (`indexes`): 80 MB at 1M tenants, unmarshalled when used
        self._indexes: tuple[bytes, bytes] | None = None
        self._indexes_at = memoryview(b"")  # their marshalled bytes in the index file
        self.git: GitRecord | None = None  # what git said at the last compile
        self.bundle: BundleRecord | None = None  # the bundle of exactly these entries
        self._token = ""  # names the index a journal record applies to
        self._journal_size = 0  # bytes of it applied; -1: unusable (write the index again)
        self._load()

    def _load(self) -> None:
        if self.directory is None or not (self.directory / INDEX_NAME).is_file():
            return
        try:
            data = memoryview(map_file(self.directory / INDEX_NAME))  # entries: read when used
            (length,) = _LENGTH.unpack_from(data)
            fmt, fingerprint, token, blob_name, state = marshal.loads(
                data[_LENGTH.size : _LENGTH.size + length]
            )
            if fmt != _FORMAT or fingerprint != self.fingerprint:
                return
            at = _LENGTH.size + length
            (length,) = _LENGTH.unpack_from(data, at)
            indexes_at = data[at + _LENGTH.size : at + _LENGTH.size + length]
            entries_at = at + _LENGTH.size + length
            if len(indexes_at) != length:
                return
            overlay: dict[str, tuple | None] = {}
            journal_size = self._replay(token, blob_name, overlay, state)
            blob = memoryview(map_file(self.directory / blob_name))
            if len(blob) < state[1]:
                return  # truncated: fragments it points at are gone
        except (OSError, EOFError, ValueError, TypeError, struct.error):
            return  # corrupt or foreign: slower only
        written_at_ns, _, fleet_clean, indexes, git, bundle = state
        self._index, self._entries, self._overlay = None, data[entries_at:], overlay
        self.written_at_ns, self.blob_name = written_at_ns, blob_name
        self.fleet_clean = bool(fleet_clean)
        if indexes == _FOLLOWS:
            self._indexes_at = indexes_at
        else:
            self._indexes = indexes
        self.git = GitRecord(*git) if git else None
        self.bundle = BundleRecord(*bundle) if bundle else None
        self.blob = blob
        self._token, self._journal_size = token, journal_size

    @property
    def indexes(self) -> tuple[bytes, bytes] | None:
        """The last compile's (hosts, wildcards) JSON (unmarshalled now if not yet)."""
        if self._indexes_at:
            at = self._indexes_at
            (hosts,) = _LENGTH.unpack_from(at) if len(at) >= _LENGTH.size else (-1,)
            if 0 <= hosts <= len(at) - _LENGTH.size:
                self._indexes = (
                    bytes(at[_LENGTH.size : _LENGTH.size + hosts]),
                    bytes(at[_LENGTH.size + hosts :]),
                )
            self._indexes_at = memoryview(b"")
        return self._indexes

    @indexes.setter
    def indexes(self, value: tuple[bytes, bytes] | None) -> None:
        self._indexes, self._indexes_at = value, memoryview(b"")

    @property
    def index(self) -> dict[str, tuple]:
        """Every entry (unmarshalled now if not yet: a corrupt index leaves the cache empty,
        as if there were none)."""
        if self._index is None:
            try:
                index = _load_entries(self._entries)
            except (EOFError, ValueError, TypeError, struct.error):
                index = {}
                self.fleet_clean, self.indexes, self.git, self.bundle = False, None, None, None
                self._journal_size = -1
            for display, entry in self._overlay.items():
                if entry is None:
                    index.pop(display, None)
                else:
                    index[display] = entry
            self._index, self._entries, self._overlay = index, memoryview(b""), {}
        return self._index

    def _replay(self, token: str, blob_name: str, overlay: dict, state: list) -> int:
        """Collect the journal's records for this index (each: token, blob, changed entries
        (None: dropped), state) into `overlay` and `state`; the bytes applied, or -1 when a
        record is torn or foreign (the next save writes the index again)."""
        try:
            journal = (self.directory or Path()).joinpath(JOURNAL_NAME).read_bytes()
        except FileNotFoundError:
            return 0
        position = 0
        while position < len(journal):
            if position + _LENGTH.size > len(journal):
                return -1
            (length,) = _LENGTH.unpack_from(journal, position)
            record = journal[position + _LENGTH.size : position + _LENGTH.size + length]
            if len(record) < length:
                return -1  # torn by a crash
            record_token, record_blob, changes, record_state = marshal.loads(record)
            if record_token != token or record_blob != blob_name:
                return -1
            overlay.update(changes)
            if record_state[3] == _SAME:  # the host indexes (megabytes) as they were
                record_state[3] = state[3]
            state[:] = record_state
            position += _LENGTH.size + length
        return position

    def lookup_all(
        self, stats: list[tuple[str, StatKey]], *, recent: bool = False
    ) -> list[FileResult | None]:
        """Per (display, stat): the result of an unchanged file (same stat, not modified
        near the last write), else None. One tight loop: it runs 100k+ times per compile.
        `recent`: only the entries the journal changed, unless every entry is read already
        (what a file git names was, most often: the last compiles read it)."""
        get = self._overlay.get if recent and self._index is None else self.index.get
        blob = self.blob
        racy_from = self.written_at_ns - _RACY_WINDOW_NS
        found: list[FileResult | None] = []
        append = found.append
        for display, stat in stats:
            entry = get(display)
            if entry is None or entry[0] != stat or stat[1] >= racy_from:
                append(None)  # unknown, changed, or modified too close to the last write
                continue
            _, _, tenant_id, domains, offset, length, problems, digest = entry
            fragment = blob[offset : offset + length] if offset >= 0 else None
            if problems:
                problems = tuple(Problem(*fields) for fields in problems)
            # tuple.__new__ skips the NamedTuple's Python-level constructor
            append(
                _new_tuple(FileResult, (display, tenant_id, domains, fragment, problems, digest))
            )
        return found

    def results_of(self, displays: Iterable[str]) -> list[FileResult]:
        """The cached results of files known to be unchanged (git said so), unchecked."""
        blob, index = self.blob, self.index
        return [_to_result(blob, display, index[display]) for display in displays]

    def by_content(self, display: str, content_sha256: bytes) -> FileResult | None:
        entry = self.index.get(display)
        if entry is None or entry[1] != content_sha256:
            return None
        return _to_result(self.blob, display, entry)

    def claims_of(self, display: str) -> tuple[str | None, tuple[str, ...]] | None:
        """(tenant id, domains) the file had at the last compile."""
        entry = self.index.get(display)
        return (entry[2], entry[3]) if entry else None

    def holds(self, display: str, stat: StatKey, content_sha256: bytes) -> bool:
        """Whether the journal's entry of `display` has this stat and content already (a
        file the last compile read)."""
        entry = (self._overlay if self._index is None else self._index).get(display)
        return entry is not None and entry[0] == stat and entry[1] == content_sha256

    def stat_of(self, display: str) -> StatKey | None:
        entry = self.index.get(display)
        return entry[0] if entry else None

    def spill(self) -> FragmentSpill | None:
        """A new blob to write fresh fragments into as they come (see FragmentSpill)."""
        return FragmentSpill(self.directory) if self.directory is not None else None

    def save(
        self,
        unchanged: Iterable[str],
        fresh: dict[str, tuple[StatKey, bytes, FileResult]],
        *,
        fleet_clean: bool,
        indexes: tuple[bytes, bytes] | None,
        git: GitRecord | None = None,
        bundle: BundleRecord | None = None,
        spill: FragmentSpill | None = None,
    ) -> None:
        """Write the index of `unchanged` files (entries kept as they are) plus `fresh`
        (display -> stat, content sha256, result) ones; a file in neither is dropped.
        `bundle`: the one assembled from exactly those entries (already written,
        `write_bundle`). `spill`: fresh fragments already written there, the new blob."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            kept = set(unchanged)
            index = {display: self.index[display] for display in kept}
            if spill is not None:
                os.replace(spill.path, self.directory / spill.name)
                blob_name = spill.name
            elif self._blob_reusable(
                sum(entry[5] for entry in index.values())
                + sum(len(r.fragment) for _, _, r in fresh.values() if r.fragment is not None)
            ):
                blob_name = self.blob_name or ""
            else:
                blob_name = f"{BLOB_PREFIX}{secrets.token_hex(8)}"
            with open(self.directory / blob_name, "ab") as blob:
                offset = blob.tell()
                if blob_name != self.blob_name:  # compacting: copy the kept fragments over
                    for display, entry in index.items():
                        if entry[4] >= 0:
                            blob.write(self.blob[entry[4] : entry[4] + entry[5]])
                            index[display] = (*entry[:4], offset, *entry[5:])
                            offset += entry[5]
                offset = _append_fragments(blob, offset, fresh, index, spill)
            state = _state(offset, fleet_clean, indexes, git, bundle)
            if blob_name == self.blob_name:  # (a new blob needs a new index)
                changes: dict[str, tuple | None] = {d: index[d] for d in fresh}
                changes.update((d, None) for d in self.index if d not in index)
                if self._journal_fits(changes):
                    self._journal(changes, state, same_indexes=indexes == self.indexes)
                    self._drop_stale_bundles(bundle)
                    return
            state[3] = _FOLLOWS
            head = (_FORMAT, self.fingerprint, secrets.token_hex(8), blob_name, state)
            head_bytes = marshal.dumps(head)
            _write_atomically(
                self.directory / INDEX_NAME,
                itertools.chain(
                    [_LENGTH.pack(len(head_bytes)), head_bytes],
                    _indexes_section(indexes),
                    _dumped_entries(index),  # (made as they are written)
                ),
            )
            (self.directory / JOURNAL_NAME).unlink(missing_ok=True)
            for stale in self.directory.glob(f"{BLOB_PREFIX}*"):
                if stale.name != blob_name:
                    stale.unlink(missing_ok=True)
            for stale in self.directory.glob(f"{SPILL_PREFIX}*"):  # (another compile's, or
                with contextlib.suppress(FileNotFoundError):  # one killed before it saved)
                    if time.time() - stale.stat().st_mtime > _SPILL_STALE_S:
                        stale.unlink()
            self._drop_stale_bundles(bundle)

    def append(
        self,
        fresh: dict[str, tuple[StatKey, bytes, FileResult]],
        *,
        git: GitRecord | None,
        bundle: BundleRecord,
    ) -> bool:
        """Save `fresh` entries over theirs and keep every other one, the fleet check's
        result and the host indexes as they are, without unmarshalling the index: one
        journal record. False (nothing saved) when the journal or the blob would outgrow
        what is live: then `save`."""
        if self.directory is None or self.blob_name is None:
            return False
        with self._locked():
            path = self.directory / self.blob_name
            adding = sum(len(r.fragment) for _, _, r in fresh.values() if r.fragment is not None)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                return False
            # the last bundle holds every live fragment: a blob within twice its size is
            # not yet mostly garbage
            if size + adding > 2 * bundle.size + COMPACT_SLACK or not self._journal_fits(fresh):
                return False
            changes: dict[str, tuple | None] = {}
            with open(path, "ab") as blob:
                offset = _append_fragments(blob, blob.tell(), fresh, changes, None)
            state = _state(offset, self.fleet_clean, None, git, bundle)  # (indexes: _SAME)
            self._journal(changes, state, same_indexes=True)
            self._drop_stale_bundles(bundle)
            return True

    def write_bundle(
        self, version: str, pieces: Iterable[bytes | memoryview], tenants: int
    ) -> BundleRecord | None:
        """Keep the bundle of `version` (its bytes in pieces) for the next compile to patch
        (bundle/patch.py); its record for `save` or `append`."""
        if self.directory is None:
            return None
        if self.bundle is not None and self.bundle.version == version and not self.bundle.patches:
            return self.bundle
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{BUNDLE_PREFIX}{version.removeprefix('sha256:')[:32]}"
        size = _write_atomically(self.directory / name, pieces)
        return BundleRecord(version, name, size, tenants)

    def read_bundle(self, record: BundleRecord | None) -> mmap.mmap | bytes | None:
        """The file of the bundle `record` names (mapped, before its patches), or None when
        it is missing or not that size."""
        if record is None or self.directory is None:
            return None
        try:
            data = map_file(self.directory / record.name)
        except OSError:
            return None
        return data if len(data) == record.size else None

    def _drop_stale_bundles(self, kept: BundleRecord | None) -> None:
        for stale in (self.directory or Path()).glob(f"{BUNDLE_PREFIX}*"):
            if kept is None or stale.name != kept.name:
                stale.unlink(missing_ok=True)

    def _journal(self, changes: dict, state: list, *, same_indexes: bool) -> None:
        if same_indexes:
            state[3] = _SAME
        record = marshal.dumps((self._token, self.blob_name, changes, state))
        with open((self.directory or Path()) / JOURNAL_NAME, "ab") as journal:
            journal.write(_LENGTH.pack(len(record)) + record)
        self._journal_size += _LENGTH.size + len(record)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open((self.directory or Path()) / LOCK_NAME, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _journal_fits(self, changes: Sized) -> bool:
        """Journal this save, unless the journal is unusable or would outgrow the index."""
        if self._journal_size < 0 or not self._token or self.directory is None:
            return False
        try:
            index_size = (self.directory / INDEX_NAME).stat().st_size
        except FileNotFoundError:
            return False
        journal = self.directory / JOURNAL_NAME
        journal_size = journal.stat().st_size if journal.is_file() else 0
        if journal_size != self._journal_size:
            return False  # another compile wrote since this one loaded: start over
        return journal_size + 100 * len(changes) <= index_size // 8 + JOURNAL_SLACK

    def _blob_reusable(self, live: int) -> bool:
        """Append to the current blob unless it is missing or mostly garbage."""
        if self.blob_name is None or self.directory is None:
            return False
        path = self.directory / self.blob_name
        return path.is_file() and path.stat().st_size <= 2 * live + COMPACT_SLACK


def _state(
    blob_size: int,
    fleet_clean: bool,
    indexes: tuple[bytes, bytes] | None,
    git: GitRecord | None,
    bundle: BundleRecord | None,
) -> list:
    return [
        time.time_ns(),
        blob_size,  # the blob's size after this save: a shorter blob is corrupt
        fleet_clean,
        indexes,
        tuple(git) if git else None,
        tuple(bundle) if bundle else None,
    ]


def _append_fragments(
    blob: BinaryIO,
    offset: int,
    fresh: dict[str, tuple[StatKey, bytes, FileResult]],
    into: dict,
    spill: FragmentSpill | None,
) -> int:
    """Append the fragments of `fresh` to the blob at `offset`, their entries into `into`;
    the blob's size after. `spill`: the blob's fragments and entries written already."""
    fragments: list[bytes | memoryview] = []
    spilled = spill.entries if spill is not None else {}
    into.update(spilled)
    if len(spilled) == len(fresh):  # (every spilled file is fresh: so these are all)
        return offset
    for display, (stat, digest, result) in fresh.items():
        if display in spilled:
            continue
        fragment = result.fragment
        position, length = -1, 0
        if fragment is not None:
            position, length = offset, len(fragment)
            fragments.append(fragment)
            offset += length
        into[display] = _entry(stat, digest, result, position, length)
    blob.writelines(fragments)  # one call: 100k writes took a quarter of a cold save
    return offset


def _entry(
    stat: StatKey, content_sha256: bytes, result: FileResult, position: int, length: int
) -> tuple:
    """A file's index entry (see CompileCache.__init__); its fragment at `position`."""
    problems = (
        tuple((p.file, p.field, p.reason, p.fix, p.value, p.line) for p in result.problems)
        if result.problems
        else ()
    )
    return (
        stat,
        content_sha256,
        result.tenant_id,
        result.domains,
        position,
        length,
        problems,
        result.digest,
    )


def _to_result(blob: memoryview, display: str, entry: tuple) -> FileResult:
    _, _, tenant_id, domains, offset, length, problems, digest = entry
    fragment = blob[offset : offset + length] if offset >= 0 else None
    if problems:
        problems = tuple(Problem(*fields) for fields in problems)
    # tuple.__new__ skips the NamedTuple's Python-level constructor (100k+ calls)
    return _new_tuple(FileResult, (display, tenant_id, domains, fragment, problems, digest))


def _indexes_section(indexes: tuple[bytes, bytes] | None) -> list[bytes]:
    """The host indexes in the index file, as they are (marshalled, they were copied: 80 MB
    at 1M tenants): the section's length, the hosts JSON's length, both JSONs."""
    if indexes is None:
        return [_LENGTH.pack(0)]
    hosts, wildcards = indexes
    size = _LENGTH.size + len(hosts) + len(wildcards)
    return [_LENGTH.pack(size), _LENGTH.pack(len(hosts)), hosts, wildcards]


_ENTRIES_AT_ONCE = 1 << 16  # entries per marshalled slice of the index


def _dumped_entries(index: dict[str, tuple]) -> Iterator[bytes]:
    """The index's entries as marshalled dicts of `_ENTRIES_AT_ONCE` entries, each after
    its length, made as they are written: at 1M entries one marshalled dict held 250 MB at
    the peak of a cold compile."""
    entries = iter(index.items())
    while chunk := dict(itertools.islice(entries, _ENTRIES_AT_ONCE)):
        dumped = marshal.dumps(chunk, _NO_REFS)
        yield _LENGTH.pack(len(dumped))
        yield dumped


def _load_entries(data: memoryview) -> dict[str, tuple]:
    """The entries `_dumped_entries` wrote (ValueError and the like when they are torn)."""
    index: dict[str, tuple] | None = None
    at = 0
    while at < len(data):
        (length,) = _LENGTH.unpack_from(data, at)
        if at + _LENGTH.size + length > len(data):
            raise EOFError("the index's entries are cut short")
        chunk = marshal.loads(data[at + _LENGTH.size : at + _LENGTH.size + length])
        if not isinstance(chunk, dict):
            raise TypeError("not an index")
        if index is None:
            index = chunk
        else:
            index.update(chunk)
        at += _LENGTH.size + length
    return index if index is not None else {}


def _write_atomically(path: Path, pieces: Iterable[bytes | memoryview]) -> int:
    """Write the pieces as the file at `path` (all or nothing); the bytes written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            size = write_releasing(handle, pieces)
        os.replace(tmp, path)
        return size
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
