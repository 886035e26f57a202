"""Running git for cdnctl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cdnctl.bundle.git_command import GitError, git


def test_git_fails_instead_of_asking_for_credentials(tmp_path: Path) -> None:
    """git asks for a user name on the terminal when a remote wants one and no helper has
    it; cdnctl's git must fail at once instead (a sync service waits for nobody)."""
    subprocess.run(["git", "init", "--quiet", str(tmp_path)], check=True)
    asked = git(tmp_path, "-c", "alias.show-env=!env", "show-env").decode()
    assert "GIT_TERMINAL_PROMPT=0" in asked.splitlines()
    with pytest.raises(GitError, match="terminal prompts disabled"):
        git(
            tmp_path,
            *("-c", "credential.helper=", "credential", "fill"),
            stdin=b"protocol=https\nhost=example.test\n\n",
            timeout=10,
        )
