"""What `cdnctl lab up` says when a step fails, and how it takes podman's stale records."""

from __future__ import annotations

import os
from pathlib import Path

from cdnctl.lab.fleet import STALE, _state, failed_task

LOG = """
PLAY [Host metrics on every CDN host] ******************************************

TASK [Gathering Facts] *********************************************************
ok: [eu-edge-1]

TASK [node_exporter : Install prometheus-node-exporter] ************************
ok: [eu-edge-1]
fatal: [eu-edge-2]: FAILED! => {"changed": false, "msg": "No package matching 'x'"}

PLAY RECAP *********************************************************************
eu-edge-2                  : ok=1    changed=0    unreachable=0    failed=1
"""


def test_the_error_quotes_the_task_that_failed_and_its_message(tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    log.write_text(LOG, encoding="utf-8")
    quoted = failed_task(log)
    assert quoted.splitlines()[0].startswith("TASK [node_exporter : Install")
    assert "No package matching 'x'" in quoted
    assert "Gathering Facts" not in quoted


def test_an_unreachable_host_is_quoted_from_its_task(tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    log.write_text(
        "TASK [Gathering Facts] ****\n"
        'fatal: [eu-edge-1]: UNREACHABLE! => {"msg": "container not running"}\n',
        encoding="utf-8",
    )
    assert "container not running" in failed_task(log)
    assert failed_task(log).startswith("TASK [Gathering Facts]")


def test_a_log_without_a_failure_gives_its_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "site.log"
    log.write_text("\n".join(f"line {i}" for i in range(100)), encoding="utf-8")
    assert failed_task(log, most=3) == "line 97\nline 98\nline 99"


def test_a_running_record_without_its_container_process_is_stale() -> None:
    # what our own cgroup file holds stands for the container id a container's init has
    held = Path(f"/proc/{os.getpid()}/cgroup").read_text(encoding="ascii").splitlines()[0]
    assert _state({"Status": "running", "Pid": os.getpid()}, held) == "running"
    # the pid is alive but is not the container's init (another cgroup): podman's record
    # outlived the container, and the pid was given to another process
    assert _state({"Status": "running", "Pid": os.getpid()}, "f" * 64) == STALE
    assert _state({"Status": "running", "Pid": 0}, "f" * 64) == STALE
    assert _state({"Status": "running", "Pid": 2**22 + 7}, "f" * 64) == STALE
    assert _state({"Status": "exited", "Pid": 0}, "f" * 64) == "exited"
