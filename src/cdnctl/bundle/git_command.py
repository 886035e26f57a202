"""One way to run git for cdnctl: bytes out, a GitError naming the command when it fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_TIMEOUT = 120  # seconds, unless the caller knows better (a checkout of 1M files)
# git fails where it would ask for a user name or password on the terminal: a command run
# by cdnctl (the sync service, a compile) never waits for an answer nobody gives.
_NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0"}


class GitError(RuntimeError):
    pass


def git(cwd: Path, *args: str, stdin: bytes | None = None, timeout: float = GIT_TIMEOUT) -> bytes:
    """`git ARGS` in `cwd`: its stdout, or GitError with git's own message."""
    return GitRun(cwd, *args, stdin=stdin).output(timeout)


class GitRun:
    """`git ARGS` in `cwd`, started: it runs beside the caller's own work (`git status`
    stats every tracked file) until `output` waits for it."""

    def __init__(self, cwd: Path, *args: str, stdin: bytes | None = None) -> None:
        self.cwd, self.args, self._stdin = cwd, args, stdin
        self._proc: subprocess.Popen[bytes] | None = None
        self._failure = ""
        self._stdout: bytes | None = None
        try:
            self._proc = subprocess.Popen(
                ["git", *args],
                cwd=cwd,
                env={**os.environ, **_NO_PROMPT},
                stdin=subprocess.PIPE if stdin is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            self._failure = f"git {' '.join(args)} in {cwd}: {exc}"

    def output(self, timeout: float = GIT_TIMEOUT) -> bytes:
        """Its stdout once it has finished, or GitError with git's own message."""
        if self._proc is None:
            raise GitError(self._failure)
        if self._stdout is not None:
            return self._stdout
        try:
            stdout, stderr = self._proc.communicate(self._stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._proc.kill()
            self._proc.communicate()
            self._proc, self._failure = None, f"git {' '.join(self.args)} in {self.cwd}: {exc}"
            raise GitError(self._failure) from None
        if self._proc.returncode != 0:
            message = stderr.decode(errors="replace").strip()
            self._proc = None
            self._failure = message or f"git {self.args[0]} failed in {self.cwd}"
            raise GitError(self._failure)
        self._stdout = stdout
        return stdout
