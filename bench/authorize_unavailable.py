"""How long authorize() takes to answer when PostgreSQL cannot (a script, not a test).

    .venv/bin/python bench/authorize_unavailable.py [--trials N] [--acquire 1s] [--command 2s]

Starts its own embedded PostgreSQL in a temporary directory (it stops and freezes it, so it
never uses DATABASE_URL's server) and measures, with the given DB_ACQUIRE_TIMEOUT and
DB_COMMAND_TIMEOUT (defaults: the settings' defaults):

1. a cached key while ``api_keys`` is locked by another transaction (answered from memory);
2. an uncached key while ``api_keys`` is locked (the query is cancelled: ``unavailable``);
3. an uncached key while every PostgreSQL process is stopped with SIGSTOP, so the server
   accepts TCP but answers nothing, not even a cancel request;
4. an uncached key after the server was shut down (connection refused).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

# bench/ holds a readmodels.py of its own: put the repository first so the package wins.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.keys import generate_key, hash_key
from ledger.settings import load_settings
from ops.devstack import EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator
from readmodels import ReadModels, Reason


async def _add_keys(conn: asyncpg.Connection, count: int) -> list[str]:
    keys = [generate_key() for _ in range(count)]
    await conn.executemany(
        "INSERT INTO api_keys (id, key_hash, name, created_at, updated_at) "
        "VALUES (gen_random_uuid(), $1, 'bench', now(), now())", [(hash_key(k),) for k in keys])
    return keys


async def _timed(call: Callable[[], Awaitable[Reason]], expected: Reason) -> float:
    started = time.perf_counter()
    reason = await call()
    elapsed = time.perf_counter() - started
    if reason is not expected:
        raise SystemExit(f"expected {expected}, got {reason}")
    return elapsed


def _postgres_pids(postmaster: int) -> list[int]:
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    return pids


def _report(label: str, seconds: list[float]) -> None:
    print(f"{label}: median {statistics.median(seconds) * 1000:.3f} ms, "
          f"max {max(seconds) * 1000:.3f} ms over {len(seconds)}")


async def main(trials: int, acquire: str, command: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="ledger-bench-unavailable-"))
    server = EmbeddedPostgres(root / "pgdata", free_port())
    server.start()
    try:
        conn = await asyncpg.connect(server.dsn)
        await Migrator(conn).migrate()
        cached, *uncached = await _add_keys(conn, 1 + 3 * trials)
        settings = load_settings(database_url=server.dsn, db_acquire_timeout=acquire,
                                 db_command_timeout=command)
        print(f"DB_ACQUIRE_TIMEOUT {acquire}, DB_COMMAND_TIMEOUT {command}")
        async with ReadModels.open(settings) as rm:
            await rm.keys.authorize(cached, "m")
            async with conn.transaction():
                await conn.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
                hits = [await _timed(lambda: _reason(rm, cached), Reason.OK)
                        for _ in range(10_000)]
                _report("1. cached key, api_keys locked", hits)
                locked = [await _timed(lambda k=k: _reason(rm, k), Reason.UNAVAILABLE)  # type: ignore[misc]
                          for k in uncached[:trials]]
                _report("2. uncached key, api_keys locked", locked)
            await conn.close()

            pids = _postgres_pids(server.pid() or 0)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                frozen = [await _timed(lambda k=k: _reason(rm, k), Reason.UNAVAILABLE)  # type: ignore[misc]
                          for k in uncached[trials:2 * trials]]
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            _report("3. uncached key, server frozen (SIGSTOP)", frozen)

            server.stop(mode="immediate")
            stopped = [await _timed(lambda k=k: _reason(rm, k), Reason.UNAVAILABLE)  # type: ignore[misc]
                       for k in uncached[2 * trials:]]
            _report("4. uncached key, server stopped", stopped)
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


async def _reason(rm: ReadModels, key: str) -> Reason:
    return (await rm.keys.authorize(key, "m")).reason


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--acquire", default="1s")
    parser.add_argument("--command", default="2s")
    args = parser.parse_args()
    asyncio.run(main(args.trials, args.acquire, args.command))
