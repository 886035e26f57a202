"""The bundle: deterministic, versioned by content, incremental, secret-free."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cdnctl.bundle import compile as compile_module
from cdnctl.bundle.compile import compile_paths, compile_tenants
from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.format import bundle_json, canonical_json, manifest_version, sha256_tag
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.validate import ValidationFailed

from ..conftest import ROOT


def test_sample_tenants_compile_to_effective_settings():
    bundle = compile_tenants(ROOT / "tenants")
    assert bundle["format"] == 1
    assert sorted(bundle["tenants"]) == ["customer-a", "customer-b", "customer-c"]
    assert bundle["hosts"]["cdn.customer-b.test"] == "customer-b"
    assert bundle["wildcards"] == {"cdn.customer-c.test": "customer-c"}
    b = bundle["tenants"]["customer-b"]
    assert b["origin"]["basic_auth"] == {
        "username": "cdn",
        "password_env": "CUSTOMER_B_ORIGIN_PASSWORD",
    }
    assert b["origin"]["base_path"] == "/assets"
    assert b["origin"]["host_header"] == "origin.customer-b.test:18082"
    assert b["cache"]["default_ttl"] == 600  # "10m"
    assert b["cache"]["stale_if_error"] == 86400  # default 1d
    assert b["cache"]["query_string"] == {"mode": "keep", "keep": ["lang", "v"]}
    assert b["rate_limit"] == {"requests_per_second": 200, "burst": 400}
    a = bundle["tenants"]["customer-a"]
    assert a["cache"]["rules"][1] == {
        "path": "*.jpg",
        "ttl": 604800,
        "bypass": False,
        "cache_set_cookie": False,
    }
    assert a["methods"] == ["GET", "HEAD", "OPTIONS"]
    c = bundle["tenants"]["customer-c"]
    assert (c["shield"], c["origin"]["host_header"]) == (False, "www.customer-c.test")


def test_bundle_is_canonical_and_version_is_its_manifest_hash():
    result = compile_paths([ROOT / "tenants"], Policy())
    assert result.bundle is not None
    document = json.loads(result.bundle)
    assert bundle_json(document) == result.bundle  # fast assembly == the wire form
    assert document["version"] == result.version == manifest_version(document)
    manifest = {k: v for k, v in document.items() if k != "version"}
    manifest["tenants"] = {i: t["digest"] for i, t in document["tenants"].items()}
    assert result.version == sha256_tag(canonical_json(manifest))
    for tenant in document["tenants"].values():
        digest = tenant.pop("digest")
        assert digest == sha256_tag(canonical_json(tenant))


def test_same_tenants_give_byte_identical_bundles(tmp_path, write_tenant, tenants_dir):
    for name in ("zeta", "alpha", "mid"):
        write_tenant(name)
    first = compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "c1").bundle
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in sorted(tenants_dir.iterdir(), reverse=True):  # other creation order
        (copy / path.name).write_bytes(path.read_bytes())
    second = compile_paths([copy], Policy(), cache_dir=None).bundle
    assert first == second


def test_any_change_changes_the_version(write_tenant, tenants_dir):
    write_tenant("acme")
    before = compile_paths([tenants_dir], Policy()).version
    write_tenant("acme", cache={"default_ttl": 60})
    assert compile_paths([tenants_dir], Policy()).version != before


def test_secrets_never_reach_the_bundle(write_tenant, tenants_dir, monkeypatch):
    monkeypatch.setenv("ACME_PASSWORD", "s3cret-value")
    write_tenant(
        "acme",
        origin={
            "url": "https://o.test",
            "basic_auth": {"username": "u", "password_env": "ACME_PASSWORD"},
        },
    )
    bundle = compile_paths([tenants_dir], Policy()).bundle
    assert bundle is not None and b"s3cret-value" not in bundle
    assert b"ACME_PASSWORD" in bundle


def test_invalid_tenants_raise_with_problems(write_tenant, tenants_dir):
    write_tenant("acme", shield="maybe")
    with pytest.raises(ValidationFailed) as caught:
        compile_tenants(tenants_dir)
    assert caught.value.problems[0].field == "shield"


def test_allow_private_origins_switch(write_tenant, tenants_dir):
    write_tenant("lab", origin={"url": "http://127.0.0.1:9000"})
    with pytest.raises(ValidationFailed):
        compile_tenants(tenants_dir)
    assert compile_tenants(tenants_dir, allow_private_origins=True)["tenants"]["lab"]


def test_incremental_cache_reuses_unchanged_files(tmp_path, write_tenant, tenants_dir, monkeypatch):
    for i in range(20):
        write_tenant(f"t{i}")
    old = time.time() - 60
    for path in tenants_dir.iterdir():
        os.utime(path, (old, old))  # outside the racy window
    cache = tmp_path / "cache"
    full = compile_paths([tenants_dir], Policy(), cache_dir=cache)

    checked: list[str] = []
    real = compile_module.check_file

    def counting(display, raw, policy):
        checked.append(Path(display).name)
        return real(display, raw, policy)

    monkeypatch.setattr(compile_module, "check_file", counting)
    again = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert checked == [] and again.bundle == full.bundle

    write_tenant("t7", cache={"default_ttl": 5})
    changed = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert checked == ["t7.yaml"]
    assert json.loads(changed.bundle)["tenants"]["t7"]["cache"]["default_ttl"] == 5

    # the cache is keyed by content: touching a file without changing it re-reads, no re-check
    os.utime(tenants_dir / "t3.yaml", (old + 1, old + 1))
    checked.clear()
    compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert checked == []

    # another policy never reuses results judged under the old one
    compile_paths([tenants_dir], Policy(allow_private_origins=True), cache_dir=cache)
    assert len(checked) == 20


def test_removed_file_disappears_from_the_bundle(tmp_path, write_tenant, tenants_dir):
    write_tenant("keep")
    gone = write_tenant("gone")
    cache = tmp_path / "cache"
    compile_paths([tenants_dir], Policy(), cache_dir=cache)
    gone.unlink()
    bundle = json.loads(compile_paths([tenants_dir], Policy(), cache_dir=cache).bundle)
    assert list(bundle["tenants"]) == ["keep"]
    assert "cdn.gone.test" not in bundle["hosts"]


def test_corrupt_cache_is_ignored(tmp_path, write_tenant, tenants_dir):
    write_tenant("acme")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "compile-cache.index").write_bytes(b"not marshal data")
    assert compile_paths([tenants_dir], Policy(), cache_dir=cache).ok
    for blob in cache.glob("compile-cache.blob.*"):
        blob.write_bytes(b"")  # index intact, fragments gone: must not serve garbage
    assert compile_paths([tenants_dir], Policy(), cache_dir=cache).bundle == (
        compile_paths([tenants_dir], Policy()).bundle
    )


def test_index_written_in_slices_is_read_whole_and_a_cut_one_ignored(
    tmp_path, write_tenant, tenants_dir, monkeypatch
):
    """The index's entries are marshalled a slice at a time: a warm compile reads every
    slice (no file checked again), and an index cut inside its entries (a full disk) is
    ignored, not half read."""
    from cdnctl.bundle import compile_cache

    old = time.time() - 60  # (outside the racy window)
    for i in range(7):
        os.utime(write_tenant(f"t{i}"), (old, old))
    monkeypatch.setattr(compile_cache, "_ENTRIES_AT_ONCE", 2)
    cache = tmp_path / "cache"
    cold = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    reads: list[str] = []
    checker = compile_module._check_many
    monkeypatch.setattr(
        compile_module, "_check_many", lambda paths, *a: reads.extend(paths) or checker(paths, *a)
    )
    (tenants_dir / "t3.yaml").touch()  # (a stat changed: the whole index is read)
    assert compile_paths([tenants_dir], Policy(), cache_dir=cache).bundle == cold.bundle
    assert reads == []  # same content: t3's result from its entry
    index = cache / "compile-cache.index"
    index.write_bytes(index.read_bytes()[:-40])
    (tenants_dir / "t5.yaml").touch()
    assert compile_paths([tenants_dir], Policy(), cache_dir=cache).bundle == cold.bundle
    # every file checked again, but t3: its entry since is the journal's (valid: the blob
    # is intact)
    assert [os.path.basename(read) for read in reads] == [f"t{i}.yaml" for i in (0, 1, 2, 4, 5, 6)]


def test_parallel_and_serial_checks_agree(write_tenant, tenants_dir, monkeypatch):
    for i in range(30):
        write_tenant(f"t{i:02d}", shield=(i % 7 != 3) or "bad")
    serial = compile_paths([tenants_dir], Policy())
    monkeypatch.setattr(compile_module, "PARALLEL_THRESHOLD", 1)
    parallel = compile_paths([tenants_dir], Policy())
    assert [p.render() for p in parallel.problems] == [p.render() for p in serial.problems]
    assert len(serial.problems) == 4  # t03, t10, t17, t24


def test_cache_fingerprint_covers_every_module_check_file_uses():
    import subprocess
    import sys

    from cdnctl.bundle.compile_cache import RESULT_MODULES

    probe = (
        "import sys, cdnctl.tenants.validate, cdnctl.bundle.compile_cache;"
        "print(' '.join(m for m in sys.modules if m.startswith('cdnctl.')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    used = {name.removeprefix("cdnctl.") for name in loaded}
    assert used <= set(RESULT_MODULES), f"add to RESULT_MODULES: {used - set(RESULT_MODULES)}"


def test_incremental_compile_always_equals_a_cold_one(tmp_path, write_tenant, tenants_dir):
    """Through a series of edits, the cached compile gives exactly what a cold one gives."""
    cache = tmp_path / "cache"
    steps = [
        lambda: [write_tenant(f"t{i}") for i in range(6)],
        lambda: write_tenant("t1", cache={"default_ttl": 5}),  # settings only
        lambda: write_tenant("t2", domains=["cdn.t2.test", "*.img.t2.test"]),  # domains
        lambda: write_tenant("t9"),  # new file
        lambda: (tenants_dir / "t0.yaml").unlink(),  # removed file
        lambda: write_tenant("t3", domains=["cdn.t4.test"]),  # conflict: invalid
        lambda: write_tenant("t3"),  # conflict fixed
        lambda: write_tenant("t4", shield="bad"),  # invalid file, same claims
        lambda: write_tenant("t4"),  # fixed again
    ]
    for step in steps:
        step()
        old = time.time() - 60
        for path in tenants_dir.iterdir():
            os.utime(path, (old, old))
        warm = compile_paths([tenants_dir], Policy(), cache_dir=cache)
        cold = compile_paths([tenants_dir], Policy(), cache_dir=None)
        assert warm.bundle == cold.bundle
        assert [p.render() for p in warm.problems] == [p.render() for p in cold.problems]
        again = compile_paths([tenants_dir], Policy(), cache_dir=cache)  # fully cached
        assert len(list(cache.glob("compile-cache.blob.*"))) == 1
        assert again.bundle == cold.bundle
        assert [p.render() for p in again.problems] == [p.render() for p in cold.problems]


def test_blob_compaction_keeps_every_fragment(tmp_path, write_tenant, tenants_dir, monkeypatch):
    from cdnctl.bundle import compile_cache

    monkeypatch.setattr(compile_cache, "COMPACT_SLACK", 0)
    cache = tmp_path / "cache"
    for i in range(5):
        write_tenant(f"t{i}")
    blobs = set()
    for ttl in range(60, 66):  # each edit appends; garbage soon outweighs live data
        write_tenant("t0", cache={"default_ttl": ttl})
        old = time.time() - 60
        for path in tenants_dir.iterdir():
            os.utime(path, (old, old))
        warm = compile_paths([tenants_dir], Policy(), cache_dir=cache)
        assert warm.bundle == compile_paths([tenants_dir], Policy()).bundle
        blobs |= {p.name for p in cache.glob("compile-cache.blob.*")}
    assert len(blobs) > 1  # it did compact into a new blob at least once
    assert len(list(cache.glob("compile-cache.blob.*"))) == 1


def _summary(result):
    """What a compile gives, comparable between compiles (fragments as bytes)."""
    return (
        result.bundle,
        result.version,
        result.manifest,
        [(r.file, r.tenant_id, r.domains, r.fragment and bytes(r.fragment), r.problems, r.digest)
         for r in result.results],
        len(result.results),
        [p.render() for p in result.problems],
    )  # fmt: skip


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.email=ci@cdnctl.test", "-c", "user.name=ci", *args],
        cwd=repo, check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_git_change_detection_always_equals_a_cold_compile(
    tmp_path, write_tenant, tenants_dir, monkeypatch
):
    """Through commits, renames, deletions, work-tree edits, untracked and misnamed files and
    a checkout of an older commit, the compile that asks git what changed gives exactly
    what a cold one gives (bundle, version, manifest, results, problems), and stats only the
    files git names; the settings-only edits among them patch the last bundle (patch.py),
    also past the point where its patches are folded into a new bundle file. A compile
    told the checkout is clean (no git status, as the sync loop's) gives the same at every
    clean step."""
    from cdnctl.bundle import patch

    cache = tmp_path / "cache"
    repo = tenants_dir.parent

    def git(*args: str) -> str:
        return _git(repo, *args)

    def commit(message: str) -> None:
        git("add", "-A")
        git("commit", "-q", "--allow-empty", "-m", message)

    git("init", "-q")
    (repo / ".gitignore").write_text("/cache/\n/synced/\n")  # as .cdnctl-cache/ in a checkout
    stat_calls: list[str] = []
    real_stat_key = compile_module._stat_key
    monkeypatch.setattr(
        compile_module, "_stat_key", lambda p: stat_calls.append(p) or real_stat_key(p)
    )
    patched: list[int] = []
    real_patch = patch.patch_bundle
    monkeypatch.setattr(
        patch, "patch_bundle", lambda *a: (r := real_patch(*a)) and (patched.append(number), r)[1]
    )
    monkeypatch.setattr(patch, "MAX_PATCH_BYTES", 2000)  # a new bundle file every few patches
    number, deltas = -1, 0
    synced, clean_compiles, clean_patches = tmp_path / "synced", 0, 0  # compiles of clean checkouts
    previous = None
    steps = [
        lambda: ([write_tenant(f"t{i}") for i in range(8)], commit("eight tenants")),
        lambda: (write_tenant("t1", cache={"default_ttl": 5}), commit("settings")),
        lambda: write_tenant("t2", domains=["cdn.t2.test", "*.img.t2.test"]),  # not committed
        lambda: commit("t2 domains"),
        lambda: (git("mv", "tenants/t3.yaml", "tenants/t9.yaml"),),  # id no longer matches
        lambda: write_tenant("t9"),  # fixed, staged rename + edit
        lambda: commit("rename t3 to t9"),
        lambda: (git("rm", "-q", "tenants/t0.yaml"), commit("remove t0")),
        lambda: (tenants_dir / "t4.yaml").unlink(),  # deleted in the work tree only
        lambda: git("checkout", "--", "tenants/t4.yaml"),  # back
        lambda: write_tenant("new"),  # untracked
        lambda: (tenants_dir / "bad.yml").write_text("id: bad\n"),  # misnamed, untracked
        lambda: commit("new and bad"),
        lambda: (tenants_dir / "bad.yml").unlink(),
        lambda: write_tenant("t5", cache={"default_ttl": 7}),
        lambda: write_tenant("t5"),  # edited and back to HEAD's content
        lambda: commit("drop bad.yml"),
        lambda: git("checkout", "-q", "HEAD~3"),  # an older commit
        lambda: git("checkout", "-q", "-"),
        # settings only: patched (the first and the last line of the bundle too)
        lambda: (write_tenant("t1", cache={"default_ttl": 9}), commit("t1 again")),
        lambda: (write_tenant("new", name="First"), write_tenant("t9", name="Last")),
        lambda: commit("first and last"),
        lambda: write_tenant("t6", domains=["b.t6.test", "a.t6.test"]),  # domains: not patched
        lambda: write_tenant("t6", domains=["a.t6.test", "b.t6.test"]),  # same ones: patched
        lambda: write_tenant("t6", domains=["a.t6.test", "a.t6.test"]),  # listed twice
        lambda: write_tenant("t6", domains=["a.t6.test", "b.t6.test"]),
        lambda: write_tenant("t7", shield="bad"),  # a problem: not patched
        lambda: write_tenant("t7"),
        lambda: (write_tenant("t2", name="Two"), write_tenant("t5", name="Five")),
        lambda: commit("names"),
        lambda: write_tenant("t8", id="t1"),  # claims another tenant's id
        lambda: write_tenant("t8", name="Eight"),
        lambda: write_tenant("t8", name="Eight again"),
    ]
    compile_paths([tenants_dir], Policy(), cache_dir=cache)
    for number, step in enumerate(steps):
        step()
        stat_calls.clear()
        warm = compile_paths([tenants_dir], Policy(), cache_dir=cache)
        stated = len(stat_calls)
        cold = compile_paths([tenants_dir], Policy(), cache_dir=None)
        assert _summary(warm) == _summary(cold), number
        if warm.patched is not None:  # what it read: the cold compile's results of them
            by_id = {r.tenant_id: r for r in cold.results}
            assert {r.tenant_id for r in warm.edited} == warm.patched[1], number
            assert all(
                (r.file, r.domains, bytes(r.fragment or b""), r.digest)
                == (c.file, c.domains, bytes(c.fragment or b""), c.digest)
                for r in warm.edited
                for c in [by_id[r.tenant_id]]
            ), number
        if warm.patched is not None and previous is not None:  # a delta need compare less
            base = ManifestStore(cache).load(previous.version)
            base_version = warm.patched[0]
            assert base_version == previous.version
            quick = make_delta(warm.bundle, warm.manifest, base, base_version, patched=warm.patched)
            assert quick == make_delta(warm.bundle, warm.manifest, base, base_version)
            deltas += 1
        previous = warm if warm.ok else None
        if number > 1:  # (the compile after a cold one checks what that one read, once)
            assert stated <= 3, (number, stat_calls)  # only what git named (or was dirty)
        again = compile_paths([tenants_dir], Policy(), cache_dir=cache)  # nothing changed
        assert _summary(again) == _summary(cold), number
        if not git("status", "--porcelain", "--untracked-files=all"):  # as the sync loop
            clean = compile_paths([tenants_dir], Policy(), cache_dir=synced, checkout_clean=True)
            assert _summary(clean) == _summary(cold), number
            clean_compiles += 1
            clean_patches += clean.patched is not None
    assert len(patched) >= 16 and deltas >= 8, (patched, deltas)
    assert clean_compiles >= 8 and clean_patches >= 3, (clean_compiles, clean_patches)
    assert len(list(cache.glob("compile-cache.bundle.*"))) == 1


def test_after_a_cold_compile_in_git_only_files_that_may_differ_from_head_are_read_again(
    tmp_path, write_tenant, tenants_dir, monkeypatch
):
    """A cold compile asks git status once the files are read (as does one that read many
    files): the next compile reads again only a file that git then found changed, or whose
    stat changed after it was read (here: put back to HEAD's content), not every file it
    read (which made the compile after a cold one of 1M files take 38 s). As the sync loop
    compiles (a clean checkout), no file is read again."""
    repo = tenants_dir.parent
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text("/cache*/\n")
    for i in range(6):
        write_tenant(f"t{i}")
    old = time.time() - 60
    for path in tenants_dir.iterdir():
        os.utime(path, (old, old))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "six tenants")
    head_t3 = (tenants_dir / "t3.yaml").read_text()
    real_check_many = compile_module._check_many

    def racing_edits(paths, *args):  # once git status has run, before the reads, and after
        t3 = tenants_dir / "t3.yaml"
        t3.write_text(head_t3.replace("origin.t3.test", "origin.t3.best"))  # read so
        written = t3.stat().st_mtime_ns
        write_tenant("t4", cache={"default_ttl": 4})  # read so, and left
        os.utime(tenants_dir / "t4.yaml", (old - 5, old - 5))  # a time from before
        yield from real_check_many(paths, *args)
        t3.write_text(head_t3)  # put back in the same clock tick, as it were: the same stat
        os.utime(t3, ns=(written, written))

    monkeypatch.setattr(compile_module, "_check_many", racing_edits)
    compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
    monkeypatch.setattr(compile_module, "_check_many", real_check_many)
    stat_calls: list[str] = []
    real_stat_key = compile_module._stat_key
    monkeypatch.setattr(
        compile_module, "_stat_key", lambda p: stat_calls.append(p) or real_stat_key(p)
    )
    _git(repo, "checkout", "--", "tenants/t4.yaml")  # back to HEAD's content: git sees none
    warm = compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
    assert sorted(Path(p).name for p in stat_calls) == ["t3.yaml", "t4.yaml"]
    assert _summary(warm) == _summary(compile_paths([tenants_dir], Policy()))
    for looked_at in (["t3.yaml", "t4.yaml"], []):  # (what a patching compile read: once more)
        stat_calls.clear()
        compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
        assert sorted(Path(p).name for p in stat_calls) == looked_at
    monkeypatch.setattr(compile_module, "ASK_GIT_AGAIN_FROM", 1)  # as if many were read
    write_tenant("t6")  # a file added: a compile that reads it, with git status before
    os.utime(tenants_dir / "t6.yaml", (old, old))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "t6")
    warm = compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
    assert _summary(warm) == _summary(compile_paths([tenants_dir], Policy()))
    stat_calls.clear()
    compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
    assert stat_calls == []  # git status after the read found t6 as HEAD has it
    compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache-clean", checkout_clean=True)
    stat_calls.clear()
    clean = compile_paths(
        [tenants_dir], Policy(), cache_dir=tmp_path / "cache-clean", checkout_clean=True
    )
    assert stat_calls == []
    assert _summary(clean) == _summary(compile_paths([tenants_dir], Policy()))


def test_the_cache_journal_is_replayed_or_dropped(tmp_path, write_tenant, tenants_dir, monkeypatch):
    """Small changes are journaled instead of rewriting the index; a torn journal record
    is ignored, and a journal outgrowing the index is folded into a new index."""
    from cdnctl.bundle import compile_cache

    cache = tmp_path / "cache"
    for i in range(5):
        write_tenant(f"t{i}")

    def compile_and_compare() -> None:
        old = time.time() - 60
        for path in tenants_dir.iterdir():
            os.utime(path, (old, old))
        warm = compile_paths([tenants_dir], Policy(), cache_dir=cache)
        assert warm.bundle == compile_paths([tenants_dir], Policy()).bundle

    compile_and_compare()
    index = (cache / compile_cache.INDEX_NAME).read_bytes()
    write_tenant("t1", cache={"default_ttl": 5})
    compile_and_compare()
    journal = cache / compile_cache.JOURNAL_NAME
    assert journal.stat().st_size > 0 and (cache / compile_cache.INDEX_NAME).read_bytes() == index
    write_tenant("t2", cache={"default_ttl": 6})
    compile_and_compare()
    journal.write_bytes(journal.read_bytes()[:-3])  # the last record torn by a crash
    write_tenant("t3", cache={"default_ttl": 7})
    compile_and_compare()  # t2 is read again; the index is written anew
    assert not journal.exists() and (cache / compile_cache.INDEX_NAME).read_bytes() != index
    monkeypatch.setattr(compile_cache, "JOURNAL_SLACK", 0)
    write_tenant("t4", cache={"default_ttl": 8})
    compile_and_compare()
    assert not journal.exists()  # it would outgrow the index


def test_a_streamed_bundle_equals_a_held_one(tmp_path, write_tenant, tenants_dir, monkeypatch):
    """A large bundle is written to the cache directory and mapped, never joined in memory:
    the same bytes, still readable after later compiles replace the file."""
    for i in range(5):
        write_tenant(f"t{i}")
    held = compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "held")
    assert isinstance(held.bundle_view.data, bytes) and held.bundle_view.data is held.bundle
    monkeypatch.setattr(compile_module, "STREAM_FROM", 1)
    streamed = compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")
    assert isinstance(streamed.bundle_view.data, mmap.mmap)
    assert bytes(streamed.bundle_view.data) == held.bundle
    write_tenant("t9")
    compile_paths([tenants_dir], Policy(), cache_dir=tmp_path / "cache")  # drops the old file
    assert streamed.bundle == held.bundle and streamed.version == held.version


@pytest.mark.parametrize("in_workers", [False, True])
def test_fragments_spilled_while_checking_are_the_cache_blob(
    tmp_path, write_tenant, tenants_dir, monkeypatch, in_workers
):
    """Fragments written to a new blob as files are checked (FragmentSpill; by the worker
    processes that check them, or by the compile itself) become the cache's blob: the
    next compiles read every file's result from it, also after some files changed (their
    entries kept, copied over), and no spill file is left behind."""
    cache, old = tmp_path / "cache", time.time() - 60  # (outside the racy window)
    for i in range(12):
        os.utime(write_tenant(f"t{i:02d}", shield=(i != 5) or "bad"), (old, old))
    monkeypatch.setattr(compile_module, "SPILL_FROM", 1)
    if in_workers:  # (batches of 3 files: the two workers append to the file at once)
        monkeypatch.setattr(compile_module, "PARALLEL_THRESHOLD", 1)
        monkeypatch.setattr(compile_module, "BATCH", 3)
    cold = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert [p.render() for p in cold.problems] == [
        p.render() for p in compile_paths([tenants_dir], Policy()).problems
    ]
    spilled = {r.tenant_id: bytes(r.fragment) for r in cold.results if r.fragment is not None}
    assert len(spilled) == 11 and spilled == {
        r.tenant_id: r.fragment
        for r in compile_paths([tenants_dir], Policy()).results
        if r.fragment is not None
    }
    for fixed in ("t05", "t12"):  # t05 fixed (now the bundle assembles), t12 new
        os.utime(write_tenant(fixed), (old + 1, old + 1))
    second = compile_paths([tenants_dir], Policy(), cache_dir=cache)  # 10 kept, 2 spilled
    assert [p.render() for p in cold.problems] and second.ok
    assert not list(cache.glob("compile-cache.spill.*"))
    assert len(list(cache.glob("compile-cache.blob.*"))) == 1
    assert second.bundle == compile_paths([tenants_dir], Policy()).bundle  # as a cold one
    reads: list[str] = []
    monkeypatch.setattr(
        compile_module, "_check_many", lambda paths, *_: reads.extend(paths) or iter(())
    )
    warm = compile_paths([tenants_dir], Policy(), cache_dir=cache)
    assert reads == [] and warm.bundle == second.bundle


@pytest.mark.parametrize("in_git", [False, True])
def test_compiles_sharing_a_cache_dir_stay_consistent(
    tmp_path, write_tenant, tenants_dir, monkeypatch, in_git
):
    """Two compiles that load the same cache state and then both save (a journal record
    each, or whole indexes, the last one winning): each gives a cold compile's bundle, and
    so does the next compile from whatever they left, in a plain directory and in git
    (patched compiles)."""
    from cdnctl.bundle.compile_cache import CompileCache

    cache, repo = tmp_path / "cache", tenants_dir.parent

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=ci@cdnctl.test", "-c", "user.name=ci", *args],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip

    for i in range(6):
        os.utime(write_tenant(f"t{i}"), (time.time() - 120, time.time() - 120))
    if in_git:
        (repo / ".gitignore").write_text("/cache/\n")
        git("init", "-q")
        git("add", "-A")
        git("commit", "-qm", "six")
    for _ in range(2):  # (the second compile checks what the first read)
        compile_paths([tenants_dir], Policy(), cache_dir=cache)
    real_load = CompileCache._load
    both_loaded = threading.Barrier(2, timeout=60)

    def load_then_wait(self) -> None:
        real_load(self)
        both_loaded.wait()

    for number in range(5):
        write_tenant(f"t{number}", cache={"default_ttl": 10 + number})
        if number == 3:
            write_tenant("new")  # not a patch
        old = time.time() - 60  # outside the racy window: cached results are trusted
        for path in tenants_dir.iterdir():
            os.utime(path, (old - number, old - number))
        if in_git:
            git("add", "-A")
            git("commit", "-qm", f"round {number}")
        monkeypatch.setattr(CompileCache, "_load", load_then_wait)
        with ThreadPoolExecutor(max_workers=2) as pool:
            racing = list(
                pool.map(lambda _: compile_paths([tenants_dir], Policy(), cache_dir=cache), [0, 1])
            )
        monkeypatch.setattr(CompileCache, "_load", real_load)
        cold = compile_paths([tenants_dir], Policy())
        assert [r.bundle for r in racing] == [cold.bundle, cold.bundle], number
        after = compile_paths([tenants_dir], Policy(), cache_dir=cache)
        assert _summary(after) == _summary(cold), number
        assert ManifestStore(cache).load(cold.version) == cold.manifest, number
