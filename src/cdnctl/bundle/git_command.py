"""One way to run git for cdnctl: bytes out, a GitError naming the command when it fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT = 120  # seconds: a fetch of a large repository, never a hung credential prompt


class GitError(RuntimeError):
    pass


def git(cwd: Path, *args: str, stdin: bytes | None = None, timeout: float = GIT_TIMEOUT) -> bytes:
    """`git ARGS` in `cwd`: its stdout, or GitError with git's own message."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {' '.join(args)} in {cwd}: {exc}") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise GitError(message or f"git {args[0]} failed in {cwd}")
    return proc.stdout
