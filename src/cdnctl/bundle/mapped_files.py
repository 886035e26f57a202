"""Files mapped read-only, and writing out what they hold without keeping it resident.

A mapped file's pages count in the process's resident memory once touched: writing out a
bundle of 1 GB from mapped fragments (the compile cache's blob) or from a mapped bundle
file would add 1 GB to the compile's peak memory. These pages can be dropped from the
process at any time (`madvise(MADV_DONTNEED)`; the page cache keeps them) and are read
again from the file when touched.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

RELEASE_EVERY = 64 << 20  # bytes written between two drops of the mapped pages read


class FileMap(mmap.mmap):
    """A file mapped read-only (`map_file`): its pages can be dropped from this process at
    any time (`madvise(MADV_DONTNEED)`) and are read again from the file when touched. A
    file's pages count in the process's resident memory once touched: writing out a bundle
    of 1 GB mapped would add 1 GB to it."""


def map_file(path: Path) -> FileMap | bytes:
    """The file's bytes, mapped read-only (it stays readable if replaced or removed)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return b""
        return FileMap(handle.fileno(), size, access=mmap.ACCESS_READ)


def write_releasing(handle: BinaryIO, pieces: Iterable[bytes | memoryview]) -> int:
    """Write the pieces to `handle`; the bytes written. The pages of mapped files
    (`FileMap`) the pieces read are dropped every `RELEASE_EVERY` bytes and at the end."""
    size, since = 0, 0
    maps: dict[int, FileMap] = {}
    for piece in pieces:
        written = handle.write(piece)
        size, since = size + written, since + written
        if isinstance(piece, memoryview) and isinstance(piece.obj, FileMap):
            maps.setdefault(id(piece.obj), piece.obj)
        if since >= RELEASE_EVERY:
            release(maps.values())
            since = 0
    release(maps.values())
    return size


def release(maps: Iterable[FileMap]) -> None:
    """Drop the pages of these mapped files from this process (not from the page cache)."""
    for mapped in maps:
        mapped.madvise(mmap.MADV_DONTNEED)
