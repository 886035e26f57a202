"""Plans: what a change to tenants/ would do, tenant by tenant and field by field."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cdnctl.bundle.git_command import GitError, git
from cdnctl.tenants.policy import Policy
from cdnctl.tenants.problems import Problem
from cdnctl.tenants.validate import TENANT_SUFFIX, FileResult, check_file

_NOT_COMPARED = frozenset({"digest"})


@dataclass(frozen=True)
class FieldChange:
    field: str
    before: Any
    after: Any


@dataclass
class Plan:
    base: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[FieldChange]] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "added": self.added,
            "removed": self.removed,
            "changed": {
                tenant: [asdict(change) for change in changes]
                for tenant, changes in self.changed.items()
            },
            "unchanged": self.unchanged,
        }


def _git(cwd: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    try:
        return git(cwd, *args, stdin=stdin)
    except GitError:
        if check:
            raise
        return b""


def tenants_at_ref(
    ref: str, directory: Path, policy: Policy
) -> tuple[dict[str, dict], list[Problem]]:
    """Effective tenants of `directory` as committed at `ref` (git objects, not the work tree)."""
    cwd = directory if directory.is_dir() else Path(".")

    def git(*args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
        return _git(cwd, *args, stdin=stdin, check=check)

    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
    top = Path(git("rev-parse", "--show-toplevel").decode().strip())
    cwd = top  # ls-tree lists relative to the current directory: work from the top
    relative = directory.resolve().relative_to(top.resolve()).as_posix()
    treeish = commit if relative == "." else f"{commit}:{relative}"
    listing = git("ls-tree", "-z", treeish, check=False)  # b"" if the dir did not exist
    blobs: list[tuple[str, str]] = []
    for record in filter(None, listing.split(b"\0")):
        meta, _, name = record.partition(b"\t")
        _, kind, sha = meta.decode().split()
        filename = name.decode()
        if kind == "blob" and filename.endswith(TENANT_SUFFIX):
            blobs.append((filename, sha))
    if not blobs:
        return {}, []
    batch = git("cat-file", "--batch", stdin="".join(f"{sha}\n" for _, sha in blobs).encode())
    results: list[FileResult] = []
    offset = 0
    for filename, _ in blobs:
        header_end = batch.index(b"\n", offset)
        size = int(batch[offset:header_end].split()[2])
        raw = batch[header_end + 1 : header_end + 1 + size]
        offset = header_end + 1 + size + 1
        display = f"{ref}:{PurePosixPath(relative, filename)}"
        results.append(check_file(display, raw, policy))
    return _by_id(results)


def changed_files(ref: str, directory: Path) -> set[str]:
    """Tenant files of `directory` that the working tree adds or edits against `ref`
    (committed, staged, unstaged or untracked), named as `cdnctl validate` names them.

    Fleet-wide problems (a domain claimed twice) are then reported on these files: the
    change is what a reviewer or a sync loop must fix, not the tenant that already owned it.
    """
    cwd = directory if directory.is_dir() else Path(".")
    _git(cwd, "rev-parse", "--verify", f"{ref}^{{commit}}")
    edited = _git(
        cwd, "diff", "--name-only", "-z", "--diff-filter=AMR", "--relative", ref, "--", "."
    )
    untracked = _git(cwd, "ls-files", "-z", "--others", "--exclude-standard", "--", ".")
    names = {name.decode() for name in (edited + untracked).split(b"\0") if name}
    return {
        os.path.join(str(directory), name)
        for name in names
        if "/" not in name and name.endswith(TENANT_SUFFIX)
    }


def tenants_of(results: list[FileResult]) -> dict[str, dict]:
    return _by_id(results)[0]


def _by_id(results: list[FileResult]) -> tuple[dict[str, dict], list[Problem]]:
    tenants: dict[str, dict] = {}
    problems: list[Problem] = []
    for result in results:
        problems.extend(result.problems)
        if result.fragment is not None and result.tenant_id is not None:
            tenants[result.tenant_id] = json.loads(bytes(result.fragment))
    return tenants, problems


def diff_tenants(base: str, before: dict[str, dict], after: dict[str, dict]) -> Plan:
    plan = Plan(base)
    plan.added = sorted(after.keys() - before.keys())
    plan.removed = sorted(before.keys() - after.keys())
    for tenant in sorted(before.keys() & after.keys()):
        if before[tenant].get("digest") == after[tenant].get("digest"):
            plan.unchanged += 1
            continue
        changes = list(_diff_values("", before[tenant], after[tenant]))
        if changes:
            plan.changed[tenant] = changes
        else:
            plan.unchanged += 1
    return plan


def _diff_values(path: str, before: Any, after: Any):
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys()):
            if key in _NOT_COMPARED:
                continue
            yield from _diff_values(
                f"{path}.{key}" if path else key, before.get(key), after.get(key)
            )
    elif before != after:
        yield FieldChange(path, before, after)
