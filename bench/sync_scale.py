"""`cdnctl sync` at scale: a one-tenant commit of a 100k-tenant repository -> live. JSON.

The product's promise at 100k tenants (issue 15's title) measured through the sync loop
itself: a bare repository of N synthetic tenants (bench/tenant_scale.py's) plus one tenant
whose origin is a local sample origin; two real edges (one region: a canary and the rest)
on loopback, run by `cdnctl.edge.runner`; one `Syncer` (the loop's cycle, no timer). The
first cycle applies every tenant to both edges (the first sync of a new fleet); then each
of `--commits` one-tenant commits (the sample tenant's TTL) is pushed and one cycle takes
it live: the cycle's wall time, its phases (the `sync_applied` log line), and what the
edges then report (`GET /config`'s commit, checked). The canary window (the 5xx watch) is
a wait, not work: it is reported and set with `--canary-window`.

    python bench/sync_scale.py                     # 100k tenants, 5 commits
    python bench/sync_scale.py --tenants 10000 --commits 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdnctl.edge.admin_client import AdminClient, Edge
from cdnctl.edge.runner import EdgeNode
from cdnctl.fleet import sync
from cdnctl.fleet.sync import Syncer, SyncSettings
from cdnctl.lab.sample_origin import SampleOrigin
from dataplane import TOKEN, edge_settings
from tenant_scale import generate

SAMPLE = "sample"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def sample_tenant(origin: str, ttl: int) -> str:
    return yaml.safe_dump(
        {
            "id": SAMPLE,
            "name": "The bench's sample tenant",
            "domains": ["cdn.sample.bench.test"],
            "origin": {"url": f"http://{origin}"},
            "cache": {"default_ttl": f"{ttl}s"},
        }
    )


def inventory(root: Path, nodes: dict[str, EdgeNode]) -> Path:
    path = root / "inventory"
    (path / "group_vars" / "all").mkdir(parents=True)
    (path / "group_vars" / "all" / "cdn.yml").write_text(
        "cdn_tenant_policy:\n  allow_private_origins: true\n"
    )
    hosts = {}
    for name, node in nodes.items():
        public_host, _, public_port = node.settings.listen.rpartition(":")
        admin_host, _, admin_port = node.settings.admin_listen.rpartition(":")
        hosts[name] = {
            "cdn_region": "eu",
            "cdn_public_address": public_host,
            "cdn_public_http_port": int(public_port),
            "cdn_private_address": admin_host,
            "cdn_admin_api_port": int(admin_port),
        }
    (path / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {"edge": {"hosts": hosts}}}})
    )
    return path


def timed_cycle(syncer: Syncer) -> tuple[float, Any, list]:
    """One cycle, its wall time and the phases its `sync_applied` line gave."""
    events: list[dict] = []
    original = sync.log_event

    def keep(event: str, **fields: Any) -> None:
        events.append({"event": event, **fields})

    sync.log_event = keep
    try:
        start = time.perf_counter()
        result = syncer.cycle()
        seconds = time.perf_counter() - start
    finally:
        sync.log_event = original
    applied = next((e for e in events if e["event"] == "sync_applied"), {})
    return seconds, result, applied.get("phases", [])


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=5)
    parser.add_argument("--canary-window", type=float, default=0.5)
    args = parser.parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {"tenants": args.tenants + 1, "edges": 2}
    with (
        tempfile.TemporaryDirectory(prefix="cdnctl-sync-scale-") as tmp,
        SampleOrigin(SAMPLE) as origin,
    ):
        root = Path(tmp)
        bare, work = root / "tenants.git", root / "work"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        git(root, "clone", "--quiet", str(bare), str(work))
        git(work, "config", "user.email", "bench@cdnctl.test")
        git(work, "config", "user.name", "bench")
        clock = time.monotonic()
        # every tenant at the sample origin: a commit changing many gets smoke requests
        generate(work / "tenants", args.tenants, origin.address, shields=False)
        ttl = 60
        (work / "tenants" / f"{SAMPLE}.yaml").write_text(sample_tenant(origin.address, ttl))
        git(work, "add", "--all", "tenants")
        git(work, "commit", "--quiet", "-m", "tenants")
        git(work, "push", "--quiet", "origin", "HEAD:main")
        result["repository_seconds"] = round(time.monotonic() - clock, 1)
        # ~2.6 KiB of config dict per tenant (2.5 times its compiled text): 256m is full
        # at 100k of these (roles/openresty: openresty_config_dict_size)
        size = f"{max(64, args.tenants * 4 // 1024)}m"
        nodes = {
            name: EdgeNode(
                edge_settings(root / name, million=args.tenants > 500_000).model_copy(
                    update={"config_dict_size": size}
                )
            )
            for name in ("eu1", "eu2")
        }
        try:
            for node in nodes.values():
                node.start()
            os.environ["CDNCTL_ADMIN_TOKEN"] = TOKEN
            syncer = Syncer(
                SyncSettings(
                    repo=str(bare),
                    branch="main",
                    inventory=inventory(root, nodes),
                    workdir=root / "sync",
                    state_file=root / "sync" / "state.json",
                    token=TOKEN,
                    canary_window=args.canary_window,
                )
            )
            seconds, first, phases = timed_cycle(syncer)
            if first.outcome != "applied":
                raise SystemExit(f"first cycle: {first}")
            result["first_cycle_s"] = round(seconds, 2)
            result["first_cycle_phases"] = phases
            cycles, by_phase = [], {}
            for _ in range(args.commits):
                ttl += 1
                (work / "tenants" / f"{SAMPLE}.yaml").write_text(sample_tenant(origin.address, ttl))
                git(work, "commit", "--quiet", "-am", f"sample ttl {ttl}s")
                git(work, "push", "--quiet", "origin", "HEAD:main")
                commit = git(work, "rev-parse", "HEAD")
                seconds, outcome, phases = timed_cycle(syncer)
                if outcome.outcome != "applied" or outcome.commit != commit:
                    raise SystemExit(f"one-tenant commit: {outcome}")
                for name, node in nodes.items():
                    running = AdminClient(Edge(name, node.admin_url), TOKEN).running_config()
                    if running.get("commit") != commit:
                        raise SystemExit(f"{name}: runs {running}")
                cycles.append(seconds)
                for name, value in phases:
                    by_phase.setdefault(name, []).append(value)
            result["one_tenant_commit_to_live_s"] = summary(cycles)
            result["one_tenant_phases_p50_s"] = {
                name: round(statistics.median(values), 3) for name, values in by_phase.items()
            }
        finally:
            for node in nodes.values():
                with contextlib.suppress(Exception):
                    node.stop()
    result["sync_process_peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    result["total_seconds"] = round(time.monotonic() - started, 1)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
