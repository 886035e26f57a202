"""Which tenant files changed since the last compile, as git tells it (no stat of every file).

When the tenants directory lives in a git work tree, the files that can differ from what
the last compile read are: those changed between the commit it compiled and HEAD
(`git diff`), those the work tree or the index changes against HEAD, untracked and ignored
ones (`git status`), and those that were dirty (or read) at the last compile, which may
have gone back to HEAD's content since. Every other file has the content the last compile
read. `git status` relies on git's own index (and its racy-timestamp checks) instead of a
second stat scan of ours.

Names are inside the directory (one level, like `tenant_files`); None when git cannot say
(not a work tree, no commit yet, the last compiled commit is gone, the directory itself
ignored): the caller then scans the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdnctl.bundle.git_command import GitError, git

GIT_TIMEOUT = 60


@dataclass(frozen=True)
class GitView:
    directory: Path
    top: str  # the work tree's top directory
    prefix: str  # the directory's path inside it, "" or ending in "/"
    head: str  # the commit HEAD names now

    @classmethod
    def of(cls, directory: Path) -> GitView | None:
        out = _git(directory, "rev-parse", "--show-toplevel", "--show-prefix", "HEAD")
        if out is None:
            return None
        lines = out.decode().split("\n")
        if len(lines) < 3 or len(lines[2]) < 40:
            return None
        return cls(directory, lines[0], lines[1], lines[2])

    def changed_since(self, commit: str) -> tuple[set[str], set[str]] | None:
        """(names in the directory changed between `commit` and HEAD or in the work tree,
        names the work tree changes against HEAD): the second are dirty now."""
        names: set[str] = set()
        dirty: set[str] = set()
        if commit != self.head:
            diff = _git(
                self.directory,
                "diff", "--name-only", "-z", "--no-renames", "--relative",
                commit, self.head, "--", ".",
            )  # fmt: skip
            if diff is None:
                return None
            names.update(name.decode() for name in diff.split(b"\0") if name)
        status = _git(
            self.directory,
            "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
            "--no-renames", "--", ".",
        )  # fmt: skip
        if status is None:
            return None
        for record in status.split(b"\0"):
            if len(record) < 4:
                continue
            path = record[3:].decode()
            if not path.startswith(self.prefix) or path == self.prefix:
                return None  # the directory itself is ignored or untracked as a whole
            dirty.add(path[len(self.prefix) :])
        return (
            {name for name in names | dirty if "/" not in name},
            {name for name in dirty if "/" not in name},
        )


def _git(directory: Path, *args: str) -> bytes | None:
    try:
        return git(directory, *args, timeout=GIT_TIMEOUT)
    except GitError:
        return None
