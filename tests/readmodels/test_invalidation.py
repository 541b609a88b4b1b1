"""Invalidation across processes, listener connection loss, flush-all, stats and metrics."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ledger.invalidation import CHANNEL
from readmodels import (
    DatabaseUnavailableError,
    ReadModels,
    ReadModelsClosedError,
    Reason,
    register_metrics,
    unregister_metrics,
)
from tests.polling import wait_until
from tests.readmodels.conftest import Writer, make_settings

ROOT = Path(__file__).resolve().parents[2]

# The other process: caches the key, then spins on authorize (cache hits only) until refused.
_WATCHER = """
import asyncio, sys, time
from readmodels import ReadModels

async def main(dsn: str, plaintext: str) -> None:
    async with ReadModels.open(dsn) as rm:
        while not (await rm.keys.authorize(plaintext, "m")).allowed:
            await asyncio.sleep(0.005)
        print("ready", flush=True)
        while (await rm.keys.authorize(plaintext, "m")).allowed:
            await asyncio.sleep(0.001)
        print("refused", time.time(), rm.stats().notifications, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_revocation_reaches_another_process(
    rm: ReadModels, writer: Writer, pg_dsn: str
) -> None:
    plaintext, key_id, _ = await writer.add_key()
    await writer.settled(rm)
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WATCHER, pg_dsn, plaintext, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert watcher.stdout is not None
        ready = await asyncio.wait_for(watcher.stdout.readline(), 30)
        assert ready.strip() == b"ready"
        assert (await rm.keys.authorize(plaintext, "m")).allowed
        revoked_at = time.time()
        await writer.revoke(key_id)
        line = await asyncio.wait_for(watcher.stdout.readline(), 5)
        word, refused_at, notifications = line.decode().split()
        assert word == "refused" and int(notifications) >= 1
        assert float(refused_at) - revoked_at < 1.0

        async def refused_here() -> bool:
            return (await rm.keys.authorize(plaintext, "m")).reason is Reason.REVOKED

        await wait_until(refused_here, 1.0, "refused_here", interval=0.005)
        assert await asyncio.wait_for(watcher.wait(), 10) == 0
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


async def test_listener_connection_loss(rm: ReadModels, writer: Writer) -> None:
    plaintext, key_id, _ = await writer.add_key()
    await writer.add_model("gpt-4o", "openai")
    await writer.settled(rm)
    assert (await rm.keys.authorize(plaintext, "gpt-4o")).allowed
    assert await rm.models.get_by_name("gpt-4o") is not None
    assert rm.stats().caches["api_keys"].size == 1
    pid = rm.listener_backend_pid
    assert pid is not None
    assert await writer.conn.fetchval("SELECT pg_terminate_backend($1)", pid)

    async def lost() -> bool:
        return rm.stats().listener_losses == 1

    await wait_until(lost, 2, "lost", interval=0.005)
    stats = rm.stats()
    assert stats.caches["api_keys"].size == 0 and stats.caches["models"].size == 0

    async def reconnected() -> bool:
        return rm.listening and rm.stats().listener_reconnects == 1

    await wait_until(reconnected, 5, "reconnected", interval=0.005)
    assert rm.listener_backend_pid != pid
    # Notifications after the reconnect still evict.
    assert (await rm.keys.authorize(plaintext, "gpt-4o")).allowed
    await writer.revoke(key_id)

    async def refused() -> bool:
        return (await rm.keys.authorize(plaintext, "gpt-4o")).reason is Reason.REVOKED

    await wait_until(refused, 1.0, "refused", interval=0.005)


async def test_unreadable_payload_flushes_everything(rm: ReadModels, writer: Writer) -> None:
    plaintext, _, _ = await writer.add_key()
    await writer.settled(rm)
    await rm.keys.authorize(plaintext, "m")
    clears = rm.stats().caches["api_keys"].clears
    await writer.conn.execute("SELECT pg_notify($1, 'not json')", CHANNEL)
    writer.sent += 1
    await writer.settled(rm)
    assert rm.stats().caches["api_keys"].clears == clears + 1
    assert rm.stats().caches["api_keys"].size == 0


async def test_stats_and_prometheus_metrics(rm: ReadModels, writer: Writer, pg_dsn: str) -> None:
    plaintext, _, _ = await writer.add_key()
    await writer.settled(rm)
    for _ in range(3):
        await rm.keys.authorize(plaintext, "m")
    stats = rm.stats()
    keys = stats.caches["api_keys"]
    assert keys.hits >= 2 and keys.misses >= 1 and keys.size == 1
    assert 0 < keys.hit_rate < 1 and set(stats.caches) == {"api_keys", "models", "spend", "budgets"}
    assert stats.listening and 1 <= stats.pool.size <= stats.pool.max_size == 4
    registry = CollectorRegistry()
    async with ReadModels.open(make_settings(pg_dsn)) as second:
        register_metrics(rm, registry, instance="a")
        register_metrics(second, registry, instance="b")  # same registry: no collision
        text = generate_latest(registry).decode()
        assert 'readmodels_cache_hits_total{cache="api_keys",instance="a"}' in text
        assert 'readmodels_cache_hits_total{cache="api_keys",instance="b"} 0.0' in text
        assert 'readmodels_cache_hit_rate{cache="api_keys",instance="a"}' in text
        assert 'readmodels_listener_up{instance="b"} 1.0' in text
        for name in ("misses_total", "evictions_total", "invalidations_total", "size"):
            assert f"readmodels_cache_{name}{{" in text
        unregister_metrics(registry, instance="b")
    text = generate_latest(registry).decode()
    assert 'instance="b"' not in text and 'instance="a"' in text
    unregister_metrics(registry, instance="a")


async def test_ping_health_close_and_recycling(pg_dsn: str) -> None:
    settings = make_settings(pg_dsn, db_conn_max_lifetime=timedelta(milliseconds=1))
    rm = await ReadModels.open(settings)
    try:
        assert await rm.ping() > 0
        health = await rm.health()
        assert health.ok and health.listening and health.error is None
        for _ in range(3):
            await asyncio.sleep(0.01)
            await rm.ping()
        assert rm.stats().pool.recycled >= 2  # over-age connections are replaced on release
    finally:
        await rm.close()
    with pytest.raises(ReadModelsClosedError):
        await rm.ping()
    closed = await rm.health()  # health never raises: a closed instance is not healthy
    assert not closed.ok and not closed.listening and closed.error == "ReadModels is closed"


async def test_open_fails_cleanly_without_database() -> None:
    with pytest.raises(DatabaseUnavailableError):
        await ReadModels.open("postgresql://postgres@127.0.0.1:1/nothing")
