"""Mapped files written out without staying resident (bundle/mapped_files.py)."""

from __future__ import annotations

import io
import os

from cdnctl.bundle import mapped_files
from cdnctl.bundle.bundle_bytes import BundleBytes
from cdnctl.bundle.mapped_files import map_file, write_releasing


def _resident_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's line
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


def test_pieces_of_a_mapped_file_are_written_whole_and_not_kept_resident(tmp_path, monkeypatch):
    path = tmp_path / "blob"
    content = os.urandom(8 << 20)
    path.write_bytes(content)
    mapped = map_file(path)
    view = memoryview(mapped)
    bytes(view)  # every page touched: resident
    assert _resident_kib(path) >= 8 << 10
    monkeypatch.setattr(mapped_files, "RELEASE_EVERY", 1 << 20)
    pieces = [b"head", view[: 3 << 20], b"-", view[3 << 20 :], b"tail"]
    out = io.BytesIO()
    assert write_releasing(out, pieces) == len(content) + 9
    assert out.getvalue() == b"head" + content[: 3 << 20] + b"-" + content[3 << 20 :] + b"tail"
    assert _resident_kib(path) < 1 << 10  # dropped (at most a page or so touched since)
    assert bytes(view) == content  # and read again from the file when touched


def test_a_mapped_bundle_written_out_is_hashed_and_not_kept_resident(tmp_path):
    path = tmp_path / "bundle"
    content = os.urandom(40 << 20)
    path.write_bytes(content)
    bundle = BundleBytes(map_file(path), [(10, 20, b"patched")])
    out = tmp_path / "out"
    with out.open("wb") as handle:
        bundle.write_to(handle)
    expected = content[:10] + b"patched" + content[20:]
    assert out.read_bytes() == expected
    assert bundle.sha256_tag() == BundleBytes(expected).sha256_tag()
    assert _resident_kib(path) < 1 << 10
