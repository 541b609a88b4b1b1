"""`ledger keys create | list | show | revoke` as an operator runs them, with a live projector."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ledger.keys import hash_key
from ledger.settings import Settings
from tests.projections.helpers import fetchval, running_worker, wait_for_rows, wait_until


def _ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], env=env, capture_output=True,
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
    demo = subprocess.Popen([sys.executable, "-m", "ledger", "demo", "--events", "2000000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    assert demo.stdout is not None
    for line in demo.stdout:  # wait until traffic flows (the workers are running)
        if line.startswith("4/5"):
            break
    await asyncio.sleep(3)
    demo.send_signal(signal.SIGINT)
    rest = await asyncio.to_thread(demo.communicate, timeout=120)
    assert demo.returncode == 130, rest[0][-2000:]
    assert "stopped" in rest[0]
    assert _processes_with(f"LEDGER_HOME={tmp_path}".encode()) == []  # workers exited too


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
