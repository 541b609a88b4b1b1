"""`ledger dev up | down | status | env` as an operator runs them, in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.devstack.ports import free_port
from tests.servers import Servers

pytestmark = pytest.mark.servers  # `ledger dev up` starts its own servers


def _ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args], env=env, capture_output=True, text=True,
        timeout=120, check=False, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(
        LEDGER_HOME=str(tmp_path / "home"),
        DEV_POSTGRES_PORT=str(free_port()),
        DEV_KAFKA_PORT=str(free_port()),
        TOPIC_USAGE_PARTITIONS="3",
    )
    yield env
    _ledger(env, "dev", "down")  # the test stops what it started, whatever happened


def _pids(home: Path) -> tuple[str, str]:
    pg = (home / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
    return pg, (home / "broker.pid").read_text().strip()


def test_up_is_idempotent_status_reports_and_down_stops(dev_env: dict[str, str]) -> None:
    home = Path(dev_env["LEDGER_HOME"])
    first = _ledger(dev_env, "dev", "up")
    assert first.returncode == 0, first.stderr
    pids = _pids(home)
    again = _ledger(dev_env, "dev", "up")
    assert again.returncode == 0, again.stderr
    assert _pids(home) == pids  # nothing restarted

    assert _ledger(dev_env, "migrate").returncode == 0
    status = _ledger(dev_env, "dev", "status")
    assert status.returncode == 0, status.stderr
    assert "PostgreSQL 18" in status.stdout
    assert "ledger.usage" in status.stdout and " 3 " in status.stdout
    assert "0001" in status.stdout and "core" in status.stdout

    exports = _ledger(dev_env, "dev", "env").stdout
    assert f"127.0.0.1:{dev_env['DEV_POSTGRES_PORT']}" in exports
    assert f"KAFKA_BOOTSTRAP_SERVERS='127.0.0.1:{dev_env['DEV_KAFKA_PORT']}'" in exports

    down = _ledger(dev_env, "dev", "down")
    assert down.returncode == 0, down.stderr
    assert not (home / "broker.pid").exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(
            f"/proc/{pid}/status").read_bytes().lower()
    assert _ledger(dev_env, "dev", "down").returncode == 0  # down twice is fine


def test_taken_port_fails_with_one_clear_line(dev_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(dev_env["DEV_KAFKA_PORT"])))
        squatter.listen()
        dev_env["DATABASE_URL"] = "postgresql://unused@127.0.0.1:1/x"  # only the broker starts
        result = _ledger(dev_env, "dev", "up")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert dev_env["DEV_KAFKA_PORT"] in lines[0] and "taken" in lines[0]


def test_configured_servers_are_used_and_nothing_is_started(
    dev_env: dict[str, str], servers: Servers
) -> None:
    dev_env["DATABASE_URL"] = servers.admin_dsn
    dev_env["KAFKA_BOOTSTRAP_SERVERS"] = servers.kafka_bootstrap
    result = _ledger(dev_env, "dev", "up")
    assert result.returncode == 0, result.stderr
    home = Path(dev_env["LEDGER_HOME"])
    assert not (home / "pgdata").exists()
    assert not (home / "broker.pid").exists()
    assert "configured (not managed)" in result.stdout
    exports = _ledger(dev_env, "dev", "env").stdout
    assert servers.kafka_bootstrap in exports
