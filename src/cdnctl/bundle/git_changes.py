"""Which tenant files changed since the last compile, as git tells it (no stat of every file).

When the tenants directory lives in a git work tree, the files that can differ from what
the last compile read are: those changed between the commit it compiled and HEAD
(`git diff`), those the work tree or the index changes against HEAD, untracked and ignored
ones (`git status`), and those that were dirty (or read) at the last compile, which may
have gone back to HEAD's content since. Every other file has the content the last compile
read. `git status` relies on git's own index (and its racy-timestamp checks) instead of a
second stat scan of ours; it runs while the compile does its own work. A caller whose
work tree only ever changes by `git checkout --force` (the sync loop's clone) can say so
(`checkout_clean`): then git status, a stat of every tracked file, is not asked at all.

Names are inside the directory (one level, like `tenant_files`); None when git cannot say
(not a work tree, no commit yet, the last compiled commit is gone, the directory itself
ignored): the caller then scans the directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cdnctl.bundle.git_command import GitError, GitRun, git

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

    def committed_since(self, commit: str) -> set[str] | None:
        """Names in the directory changed between `commit` and HEAD (None: git cannot say,
        e.g. the commit is gone)."""
        return self.diff(commit).names()

    def diff(self, commit: str) -> Diff:
        """`committed_since`, started: two trees of a million entries take git a few tenths
        of a second to compare, so it runs while the caller does its own work."""
        if commit == self.head:
            return Diff(None)
        run = GitRun(
            self.directory,
            "diff", "--name-only", "-z", "--no-renames", "--relative", commit, self.head, "--", ".",
        )  # fmt: skip
        return Diff(run)

    def status(self) -> Status:
        """`git status` of the directory, started: it stats every tracked file (about 0.2 s
        at 100k), so it runs while the caller does its own work (`Status.dirty` waits)."""
        run = GitRun(
            self.directory,
            "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
            "--no-renames", "--", ".",
        )  # fmt: skip
        return Status(self, run)

    def changed_since(
        self, commit: str, *, checkout_clean: bool = False
    ) -> tuple[set[str], set[str]] | None:
        """(names in the directory changed between `commit` and HEAD or in the work tree,
        names the work tree changes against HEAD): the second are dirty now.
        `checkout_clean`: the caller vouches that the work tree holds exactly HEAD's files
        (a `git checkout --force` nothing else writes into): git status is not asked."""
        status = None if checkout_clean else self.status()
        return changes(self.committed_since(commit), status.dirty() if status else set())


def changes(committed: set[str] | None, dirty: set[str] | None) -> tuple[set[str], set[str]] | None:
    """`GitView.changed_since` from its two parts (None when either is unknown)."""
    if committed is None or dirty is None:
        return None
    return committed | dirty, dirty


class Diff:
    def __init__(self, run: GitRun | None) -> None:
        self._run = run  # None: the same commit, nothing changed

    def names(self) -> set[str] | None:
        """GitView.committed_since (waits for git)."""
        if self._run is None:
            return set()
        try:
            diff = self._run.output(GIT_TIMEOUT)
        except GitError:
            return None
        return {name for name in diff.decode().split("\0") if name and "/" not in name}


class Status:
    def __init__(self, view: GitView, run: GitRun) -> None:
        self._view, self._run = view, run

    def dirty(self) -> set[str] | None:
        """Names in the directory the work tree or the index changes against HEAD,
        untracked and ignored ones too; None when git cannot say (the directory itself is
        ignored or untracked as a whole, git failed)."""
        try:
            status = self._run.output(GIT_TIMEOUT)
        except GitError:
            return None
        prefix = self._view.prefix
        dirty: set[str] = set()
        for record in status.split(b"\0"):
            if len(record) < 4:
                continue
            path = record[3:].decode()
            if not path.startswith(prefix) or path == prefix:
                return None
            name = path[len(prefix) :]
            if "/" not in name:
                dirty.add(name)
        return dirty


def _git(directory: Path, *args: str) -> bytes | None:
    try:
        return git(directory, *args, timeout=GIT_TIMEOUT)
    except GitError:
        return None
