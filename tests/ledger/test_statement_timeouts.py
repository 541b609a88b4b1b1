"""Workers, rebuild, migrate and the CLI run with a statement timeout: a held lock cannot hang them.

Each test holds a lock the command needs from another connection, as a long transaction or a
stuck migration would. The subprocess ``timeout`` is only a guard that turns a hang (the
defect) into a failure; nothing is timed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg

from ledger.settings import Settings
from tests.ops.test_cli_errors import _one_line
from tests.polling import wait_until
from tests.projections.helpers import running_worker

HANG_GUARD_S = 60
_MIGRATION_LOCK = 7_261_845_001  # ops.migrate's advisory lock key


def _ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=HANG_GUARD_S, check=False, stdin=subprocess.DEVNULL)


def _env(settings: Settings, **overrides: str) -> dict[str, str]:
    return {**os.environ, **settings.environment(), **overrides}


@asynccontextmanager
async def _holding(dsn: str, *statements: str) -> AsyncIterator[None]:
    """Run ``statements`` in an open transaction, holding their locks until the block ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for statement in statements:
                await conn.execute(statement)
            yield
    finally:
        await conn.close()


async def test_status_gives_up_on_a_locked_table(settings: Settings) -> None:
    assert settings.database_url
    async with _holding(settings.database_url,
                        "LOCK TABLE projection_checkpoints IN ACCESS EXCLUSIVE MODE"):
        result = await asyncio.to_thread(
            _ledger, _env(settings, DB_STATEMENT_TIMEOUT="1s"), "status")
    _one_line(result, "statement timeout", "DB_STATEMENT_TIMEOUT")


async def test_rebuild_gives_up_on_a_locked_table(settings: Settings) -> None:
    assert settings.database_url
    async with _holding(settings.database_url, "LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE"):
        result = await asyncio.to_thread(
            _ledger, _env(settings, DB_STATEMENT_TIMEOUT="1s"), "rebuild", "keys")
    _one_line(result, "statement timeout", "DB_STATEMENT_TIMEOUT")


async def test_migrate_has_its_own_statement_timeout(
    settings: Settings, empty_pg_dsn: str
) -> None:
    # Another runner holds the migration lock (stuck, or slow on a big table).
    conn = await asyncpg.connect(empty_pg_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        env = _env(settings, DATABASE_URL=empty_pg_dsn, DB_STATEMENT_TIMEOUT="0",
                   DB_MIGRATE_STATEMENT_TIMEOUT="1s")
        result = await asyncio.to_thread(_ledger, env, "migrate")
    finally:
        await conn.close()
    _one_line(result, "statement timeout", "DB_MIGRATE_STATEMENT_TIMEOUT")


async def test_projector_connections_carry_the_statement_timeout(settings: Settings) -> None:
    configured = settings.model_copy(update={"db_statement_timeout": timedelta(seconds=7)})
    async with running_worker(configured, ("keys",)) as worker:
        runner = worker.runners[0]

        async def connected() -> bool:
            return runner._conn is not None

        await wait_until(connected, 30, "the keys runner to connect")
        async with runner._db_lock:  # the runner uses its connection one call at a time
            assert runner._conn is not None
            shown = await runner._conn.fetchval("SHOW statement_timeout")
    assert shown == "7s"
