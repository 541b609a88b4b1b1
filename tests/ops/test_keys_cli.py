"""`ledger keys create | list | show | revoke` as an operator runs them, with a live projector."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ledger.codec import parse_event
from ledger.events import ApiKeyCreated, ApiKeyRevoked
from ledger.keys import hash_key
from ledger.producer import LedgerProducer
from ledger.routing import Topics
from ledger.settings import Settings
from ops.devstack.ports import free_port
from tests.ledger.producer_helpers import consume, create_topics, unique_topics
from tests.polling import wait_until
from tests.projections.helpers import fetchval, running_worker, wait_for_rows


def _ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)


async def test_create_show_list_revoke(settings: Settings) -> None:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    assert settings.database_url
    async with running_worker(settings, ("keys",)):
        created = await asyncio.to_thread(
            _ledger, env, "keys", "create", "--name", "ops-key", "--owner", "ops",
            "--models", "gpt-4o,gpt-4o-mini", "--budget", "12.5", "--expires", "2030-01-01")
        assert created.returncode == 0, created.stderr
        key_id = re.search(r"key id:\s+(\S+)", created.stdout)
        plaintext = re.search(r"api key:\s+(\S+)", created.stdout)
        assert key_id and plaintext
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM api_keys", 1)
        stored = await fetchval(settings.database_url, "SELECT key_hash FROM api_keys")
        assert stored == hash_key(plaintext[1])  # only the hash is stored
        assert plaintext[1] not in await fetchval(
            settings.database_url, "SELECT row_to_json(k)::text FROM api_keys k")

        shown = await asyncio.to_thread(_ledger, env, "keys", "show", key_id[1])
        assert shown.returncode == 0, shown.stderr
        assert "ops-key" in shown.stdout and "12.5" in shown.stdout
        assert "month-to-date:   0 USD" in shown.stdout
        listed = await asyncio.to_thread(_ledger, env, "keys", "list", "--owner", "ops")
        assert key_id[1] in listed.stdout and "active" in listed.stdout

        revoked = await asyncio.to_thread(_ledger, env, "keys", "revoke", key_id[1])
        assert revoked.returncode == 0, revoked.stderr

        async def is_revoked() -> bool:
            shown = await asyncio.to_thread(_ledger, env, "keys", "show", key_id[1])
            return "state:           revoked" in shown.stdout

        await wait_until(is_revoked, 30, "the revocation")
    missing = await asyncio.to_thread(_ledger, env, "keys", "show",
                                      "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1


async def test_demo_stops_cleanly_on_ctrl_c(settings: Settings, tmp_path: Path) -> None:
    env = {**os.environ, **settings.environment(), "LEDGER_HOME": str(tmp_path)}
    demo = subprocess.Popen([sys.executable, "-m", "ops", "demo", "--events", "2000000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    assert demo.stdout is not None
    for line in demo.stdout:  # wait until traffic flows (the workers are running)
        if line.startswith("4/5"):
            break
    await asyncio.sleep(3)
    demo.send_signal(signal.SIGINT)
    try:
        rest = await asyncio.to_thread(demo.communicate, timeout=120)
    except subprocess.TimeoutExpired:
        # Seen once in CI under load: say where it stood, for the next time.
        raise AssertionError(_where_the_demo_stood(demo, tmp_path)) from None
    assert demo.returncode == 130, rest[0][-2000:]
    assert "stopped" in rest[0]
    assert _processes_with(f"LEDGER_HOME={tmp_path}".encode()) == []  # workers exited too


def _where_the_demo_stood(demo: subprocess.Popen[str], home: Path) -> str:
    """The stuck demo killed; the end of its output and of its workers' logs."""
    demo.kill()
    output = demo.communicate()[0]
    logs = {log.name: log.read_text(errors="replace")[-1500:]
            for log in sorted(home.glob("demo-worker-*.log"))}
    return (f"the demo did not stop within 120 s of Ctrl-C; its output ends:\n"
            f"{output[-2000:]}\nworker logs: {logs}")


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _offline_env(tmp_path: Path, topics: Topics) -> dict[str, str]:
    """A broker address where nothing listens: connections are refused at once."""
    return {**os.environ, "COLUMNS": "200",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": "postgresql://127.0.0.1:1/unused",  # key commands that emit
            "LEDGER_HOME": str(tmp_path / "home"), "SPOOL_DIR": str(tmp_path / "spool"),
            "TOPIC_USAGE": topics.usage, "TOPIC_KEYS": topics.keys,
            "TOPIC_CATALOG": topics.catalog}


async def test_create_without_a_broker_says_the_key_is_only_spooled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = unique_topics()
    env = _offline_env(tmp_path, topics)
    created = await asyncio.to_thread(_ledger, env, "keys", "create", "--name", "offline")
    # Not a success: the key does not work until its create event reaches Kafka.
    assert created.returncode == 3, created.stderr
    [line] = created.stderr.strip().splitlines()  # one line, no traceback
    assert "spooled" in line and "not yet delivered" in line and str(tmp_path / "spool") in line
    # It names the commands that deliver it: those that open a producer on that spool.
    assert line.endswith("(`ledger keys create`, `ledger keys revoke`, `ledger budgets set` and "
                         "`ledger budgets remove` do); pass --allow-spooled to accept that"), line
    # The key is still printed: its create event is durable and will be delivered.
    key_id = re.search(r"key id:\s+(\S+)", created.stdout)
    plaintext = re.search(r"api key:\s+(\S+)", created.stdout)
    assert key_id and plaintext

    accepted = await asyncio.to_thread(_ledger, env, "keys", "create", "--name", "second",
                                       "--allow-spooled")
    assert accepted.returncode == 0, accepted.stderr
    assert "spooled" in accepted.stdout and "not yet delivered" in accepted.stdout

    revoked = await asyncio.to_thread(_ledger, env, "keys", "revoke", key_id[1])
    assert revoked.returncode == 3, revoked.stderr
    assert "revocation" in revoked.stderr and "still works" in revoked.stderr

    # The broker answers again: the next producer on that spool delivers all three events.
    await create_topics(kafka_bootstrap, topics)
    async with LedgerProducer(kafka_bootstrap, topics=topics, spool_dir=tmp_path / "spool"):
        pass
    events = [parse_event(m.value) for m in await consume(kafka_bootstrap, [topics.keys], 3)]
    created_events = [e for e in events if isinstance(e, ApiKeyCreated)]
    assert {str(e.api_key_id) for e in created_events} >= {key_id[1]}
    assert hash_key(plaintext[1]) in {e.key_hash for e in created_events}
    assert any(isinstance(e, ApiKeyRevoked) for e in events)
