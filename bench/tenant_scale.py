"""Tenant scale: validate+compile time and peak memory for N synthetic tenants.

Prints one JSON document. For each size: the cold full compile (empty cache), the warm
no-change compile, and the compile after changing one file (the directory is stat-ed);
then the same tenants committed to git, and the compile after a commit that changes one
tenant, plus the delta against the version compiled before it (git says what changed;
see bundle/git_changes.py), once as `cdnctl compile` in a work tree does and once as the
sync loop compiles its clean checkout (`checkout_clean`: no git status). Each compile runs
in a fresh process (so peak RSS is that compile's own), repeated `--repeat` times (median).

    python bench/tenant_scale.py                     # 10k and 100k
    python bench/tenant_scale.py --with-1m           # and 1M (generating and committing
                                                     # 1M files takes a long while)

Targets (issue 15, 2-core machine): 100k full <= 12 s; one tenant changed in git, compile +
delta <= 0.5 s at 100k and <= 2 s at 1M; 1M full <= 150 s with peak RSS <= 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from cdnctl.bundle.compile import compile_paths
from cdnctl.bundle.delta import make_delta
from cdnctl.bundle.manifest_store import ManifestStore
from cdnctl.tenants.policy import Policy
tenants, cache, out = map(Path, sys.argv[1:4])
base = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
clean = sys.argv[5:] == ["clean"]  # as the sync loop: a clean checkout, no git status
def cpu_now():
    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime  # git's too
cpu_at_start = cpu_now()  # after the imports (a long-running sync loop pays them once)
start = time.perf_counter()
result = compile_paths([tenants], Policy(), cache_dir=cache, checkout_clean=clean)
assert result.ok, [p.render() for p in result.problems[:5]]
bundle = result.bundle_view  # a large bundle stays in its file (mapped), not in memory
written = time.perf_counter()
with out.open("wb") as handle:
    bundle.write_to(handle)  # (as `cdnctl compile` writes it: hashing it meanwhile)
written = time.perf_counter() - written
delta_bytes = None
if base:
    delta = make_delta(
        bundle, result.manifest, ManifestStore(cache).load(base), base, patched=result.patched,
        checked=True,
    )
    out.with_name("delta.json").write_bytes(delta.body)
    delta_bytes = len(delta.body)
elapsed = time.perf_counter() - start
cpu = cpu_now()
me, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
self_kib, workers_kib = me.ru_maxrss, children.ru_maxrss
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu - cpu_at_start,
                  "process_cpu_seconds": cpu, "main_rss_kib": self_kib,
                  "worker_rss_kib": workers_kib,
                  "tenants": len(result.results), "bundle_bytes": len(bundle),
                  "version": result.version, "delta_bytes": delta_bytes,
                  "bundle_file_seconds": written}))
"""

TEMPLATE = """id: {id}
name: Tenant {n}
domains:
  - cdn.{id}.example.com
  - static.{id}.example.com
origin:
  url: https://origin-{n}.example.net/base
  connect_timeout: 3s
cache:
  default_ttl: {ttl}
  query_string: {query}
  rules:
    - path: /api/*
      bypass: true
    - path: "*.jpg"
      ttl: 7d
shield: {shield}
"""


def generate(
    directory: Path, count: int, origin: str | None = None, *, shields: bool = True
) -> None:
    """`count` synthetic tenant files; `origin` (HOST:PORT) as every tenant's origin instead
    of a made-up name each; `shields`: every other tenant behind a shield."""
    directory.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE
    if origin is not None:
        template = TEMPLATE.replace("https://origin-{n}.example.net/base", f"http://{origin}")
    for n in range(count):
        tenant_id = f"t{n:07d}"
        text = template.format(
            id=tenant_id,
            n=n,
            ttl=f"{1 + n % 24}h",
            query="[v, lang]" if n % 3 == 0 else "all",
            shield="true" if shields and n % 2 else "false",
        )
        (directory / f"{tenant_id}.yaml").write_text(text, encoding="utf-8")
    old = time.time() - 3600  # as if checked out an hour ago (outside the racy-stat window)
    for entry in os.scandir(directory):
        os.utime(entry.path, (old, old))


def run_compile(
    tenants: Path, cache: Path, out: Path, delta_from: str | None = None, *, clean: bool = False
) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(tenants),
            str(cache),
            str(out),
            delta_from or "-",
            *["clean"] * clean,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


def summarise(runs: list[dict]) -> dict:
    peak_main = max(r["main_rss_kib"] for r in runs)
    peak_workers = max(r["worker_rss_kib"] for r in runs)
    return {
        "seconds_median": round(statistics.median(r["seconds"] for r in runs), 3),
        "seconds_all": [round(r["seconds"], 3) for r in runs],
        # user+sys of the compile and its children (workers, git): what a loaded machine
        # does not inflate the way it does wall time; the process's own adds the imports
        "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
        "process_cpu_seconds_median": round(
            statistics.median(r["process_cpu_seconds"] for r in runs), 3
        ),
        # of which writing bundle.json out (a gigabyte at 1M tenants: mostly the disk's speed)
        "bundle_file_seconds_median": round(
            statistics.median(r["bundle_file_seconds"] for r in runs), 3
        ),
        "peak_rss_mib_main": round(peak_main / 1024, 1),
        "peak_rss_mib_worker": round(peak_workers / 1024, 1),
    }


def measure(size: int, repeat: int, root: Path) -> dict:
    tenants = root / f"tenants-{size}"
    t0 = time.perf_counter()
    generate(tenants, size)
    generation = time.perf_counter() - t0
    out = root / "bundle.json"
    cold, warm, one_change = [], [], []
    for round_no in range(repeat):
        cache = root / f"cache-{size}-{round_no}"
        cold.append(run_compile(tenants, cache, out))
        warm.append(run_compile(tenants, cache, out))
        target = tenants / f"t{(round_no * 7919) % size:07d}.yaml"
        text = target.read_text()
        target.write_text(text.replace("connect_timeout: 3s", f"connect_timeout: {4 + round_no}s"))
        one_change.append(run_compile(tenants, cache, out))
        target.write_text(text)
    git_started = time.perf_counter()
    git(tenants, "init", "-q")
    git(tenants, "add", "-A")
    git(tenants, "commit", "-q", "-m", "tenants")
    git_seconds = time.perf_counter() - git_started
    # A cold compile in the work tree (a fresh clone's first `cdnctl compile`), and the
    # no-change compile after it: git says nothing changed, and the cold compile's reads
    # must not count as changes (once run: a cold compile is the costly part).
    git_cold_cache = root / f"cache-{size}-git"
    git_cold = run_compile(tenants, git_cold_cache, out)
    git_after_cold = run_compile(tenants, git_cold_cache, out)
    # The last round's cache, now inside a work tree: the first compile records the commit
    # (nothing to validate: the files are unchanged), the second asks git.
    cache = root / f"cache-{size}-{repeat - 1}"
    run_compile(tenants, cache, out)
    version = run_compile(tenants, cache, out)["version"]
    git_one_change: dict[bool, list[dict]] = {False: [], True: []}
    for clean in (False, True):
        for round_no in range(repeat):
            target = tenants / f"t{(round_no * 104729 + clean * 31) % size:07d}.yaml"
            target.write_text(
                target.read_text().replace(
                    "connect_timeout: 3s", f"connect_timeout: {9 + round_no}s"
                )
            )
            git(tenants, "commit", "-q", "-am", f"change {target.name}")
            run = run_compile(tenants, cache, out, delta_from=version, clean=clean)
            git_one_change[clean].append(run)
            version = run["version"]
    return {
        "tenants": size,
        "generate_seconds": round(generation, 1),
        "git_add_commit_seconds": round(git_seconds, 1),
        "bundle_mib": round(cold[0]["bundle_bytes"] / 2**20, 1),
        "full_validate_compile": summarise(cold),
        "no_change_recompile": summarise(warm),
        "one_file_changed_recompile": summarise(one_change),
        "git_cold_compile": summarise([git_cold]),
        "git_no_change_after_cold_compile": summarise([git_after_cold]),
        "git_one_tenant_commit_compile_and_delta": {
            **summarise(git_one_change[False]),
            "delta_bytes": git_one_change[False][0]["delta_bytes"],
        },
        # as the sync loop compiles its clone (checkout_clean: no git status)
        "git_one_tenant_commit_compile_and_delta_clean_checkout": {
            **summarise(git_one_change[True]),
            "delta_bytes": git_one_change[True][0]["delta_bytes"],
        },
    }


def git(directory: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=bench@cdnctl.test", "-c", "user.name=bench", *args],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--with-1m", action="store_true", help="Also 1M tenants.")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + [1_000_000] * args.with_1m
    results = []
    with tempfile.TemporaryDirectory(prefix="cdnctl-bench-") as tmp:
        for size in sizes:
            results.append(measure(size, args.repeat, Path(tmp)))
    document = {
        "benchmark": "tenant_scale",
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "targets": {
            "full_100k_seconds": 12,
            "git_one_tenant_compile_and_delta_100k_seconds": 0.5,
            "git_one_tenant_compile_and_delta_1m_seconds": 2,
            "full_1m_seconds": 150,
            "peak_rss_mib_1m": 2048,
        },
        "results": results,
    }
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
