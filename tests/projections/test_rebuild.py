"""Rebuild of usage while the worker keeps running and traffic keeps coming.

That a rebuild equals the live tables, for every projection, is the shared case of
test_rebuild_equals_live.py; this adds what only usage shows: the ground truth through a
rebuild under live traffic, and the index names restored.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg

from ledger.settings import Settings
from projections import make_projection
from projections.rebuild import Rebuilder
from projections.reconcile import compare
from tests.projections.helpers import (
    emit,
    ground_truth,
    random_usage,
    running_worker,
    summaries,
    wait_for_rows,
)

COUNT = "SELECT count(*) FROM usage_records"


async def _table(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_usage_rebuild_equals_the_ground_truth_while_the_worker_keeps_running(
    settings: Settings,
) -> None:
    rng = random.Random(21)
    keys = [uuid.uuid4() for _ in range(10)]
    events = random_usage(rng, keys, 5000)
    await emit(settings, events + events[:100])  # with duplicates
    assert settings.database_url and settings.kafka_bootstrap_servers
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, COUNT, 5000)
        assert await summaries(settings.database_url) == ground_truth(events)
        live_rows = await _table(settings.database_url,
                                 "SELECT event_id, cost_usd FROM usage_records ORDER BY 1")
        before = await _table(settings.database_url,
                              "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'usage%' "
                              "AND schemaname = 'public' ORDER BY 1")
        rebuilder = Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                              bootstrap_servers=settings.kafka_bootstrap_servers)
        more = random_usage(rng, keys, 1000)
        sender = asyncio.create_task(emit(settings, more))  # traffic during the rebuild
        await rebuilder.run()
        await sender
        await wait_for_rows(settings.database_url, COUNT, 6000)
    # The rebuilt tables, plus what the live worker added after the swap, hold each emitted
    # event exactly once: the rebuild neither lost nor double-counted any.
    assert await summaries(settings.database_url) == ground_truth(events + more)
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await compare(conn) == []  # every other summary column agrees with the records
    finally:
        await conn.close()
    rebuilt_rows = await _table(settings.database_url,
                                "SELECT event_id, cost_usd FROM usage_records ORDER BY 1")
    assert set(live_rows) <= set(rebuilt_rows)
    assert len(rebuilt_rows) == 6000
    after = await _table(settings.database_url,
                         "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'usage%' "
                         "AND schemaname = 'public' ORDER BY 1")
    assert after == before  # index names restored for later migrations
    schemas = await _table(settings.database_url,
                           "SELECT nspname FROM pg_namespace WHERE nspname LIKE 're%_usage'")
    assert schemas == []
