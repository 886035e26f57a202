"""Run one nginx edge/shield node in a private prefix (used by `cdnctl preview` and tests).

`nginx -p PREFIX -c conf/nginx.conf -g "daemon off;"` runs in the foreground as our child,
and it gets SIGTERM if the Python process dies (PR_SET_PDEATHSIG): no stray servers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx

from cdnctl.edge.nginx_conf import NodeSettings, write_instance

NGINX_BINARY = shutil.which("nginx") or "/usr/sbin/nginx"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: nginx gets SIGTERM if the Python process dies.

    Linux ties this to the thread that forked: call EdgeNode.start() from a thread that
    lives as long as the node (the main thread, as preview, lab and the tests do).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EdgeStartError(RuntimeError):
    """nginx did not come up; the message carries its error log."""


_given_ports: set[int] = set()
_given_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to now and that this process was not given before: the
    kernel offers a port it just released again (3 repeats in 300 calls here), so two
    servers given ports before either binds could get the same one (pebble's and
    pebble-challtestsrv's management ports once did)."""
    with _given_ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given_ports:
                _given_ports.add(port)
                return port


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


class EdgeNode:
    """One running nginx node. Use as a context manager, or call start()/stop()."""

    def __init__(self, settings: NodeSettings) -> None:
        if settings.user is None and os.geteuid() == 0:
            # A private instance lives in the invoking user's directories (often 0700, like
            # pytest's tmp_path): its workers run as that user, not as nobody.
            settings = settings.model_copy(update={"user": "root root"})
        self.settings = settings
        self.prefix = settings.prefix.absolute()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.listen}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.admin_listen}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def _command(self, *extra: str) -> list[str]:
        return [NGINX_BINARY, "-p", str(self.prefix), "-c", "conf/nginx.conf", *extra]

    def test_config(self) -> None:
        """`nginx -t` on the written config; raises EdgeStartError with nginx's output."""
        write_instance(self.settings)
        result = subprocess.run(
            self._command("-t", "-q"), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise EdgeStartError(result.stderr.strip())

    def start(self, timeout: float = 10.0) -> EdgeNode:
        write_instance(self.settings)
        # Left behind by a crash (nginx never unlinks them then): nginx could not bind them.
        for socket_name in ("adapter.sock", "relay.sock"):
            (self.prefix / "run" / socket_name).unlink(missing_ok=True)
        stderr = (self.prefix / "logs" / "stderr.log").open("ab")
        self.process = subprocess.Popen(
            self._command("-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        stderr.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeStartError(
                    "nginx exited with "
                    f"{self.process.returncode}:\n{_tail(self.prefix / 'logs' / 'stderr.log')}"
                    f"\n{_tail(self.error_log)}"
                )
            if self._listening(self.settings.listen) and self._healthy() and self._all_forked():
                return
            time.sleep(0.05)
        raise EdgeStartError(f"nginx not ready after {timeout}s:\n{_tail(self.error_log)}")

    def _all_forked(self) -> bool:
        """Every configured worker is there: one answers before the master forked the next,
        and a caller comparing worker PIDs later would see a "new" worker."""
        workers = self.settings.workers
        return workers == "auto" or len(self.worker_pids()) >= workers

    @staticmethod
    def _listening(hostport: str) -> bool:
        try:
            with socket.create_connection(_split(hostport), timeout=0.5):
                return True
        except OSError:
            return False

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.admin_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def master_pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def worker_pids(self) -> list[int]:
        """PIDs of the current worker processes (children of the master)."""
        pid = self.master_pid
        if pid is None:
            return []
        children = Path(f"/proc/{pid}/task/{pid}/children")
        try:
            pids = [int(p) for p in children.read_text().split()]
        except OSError:
            return []
        workers = []
        for child in pids:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"worker process" in cmdline:
                workers.append(child)
        return sorted(workers)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def __enter__(self) -> EdgeNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
