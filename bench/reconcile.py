"""Benchmark of ``ledger reconcile`` and ``--repair`` (a script, not a test).

    .venv/bin/python bench/reconcile.py [--records 500000] [--damage 25]

Starts a private embedded PostgreSQL (or uses DATABASE_URL), projects ``--records`` usage
events with the usage projection's own code (1,000 keys, Zipf-like, 50 models, three
months), then times: the full comparison, one month, one key; and a repair of ``--damage``
summaries changed by hand (a fifth deleted): its total, and the longest a batch waited for the
usage projection's advisory lock meanwhile (a probe takes it shared in a loop, as batches
do). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
from scratch_db import migrated_database

from ledger.events import UsageRecorded
from projections.base import Envelope, lock_key
from projections.reconcile import Scope, compare, compare_groups, repair
from projections.usage import UsageProjection

MODELS = tuple(f"model-{m:02d}" for m in range(50))
START = datetime(2026, 8, 1, tzinfo=UTC)


async def seed(conn: asyncpg.Connection, records: int) -> list[uuid.UUID]:
    rng = random.Random(3)
    keys = [uuid.uuid4() for _ in range(1000)]
    weights = [1 / (rank + 1) for rank in range(len(keys))]
    projection = UsageProjection()
    for first in range(0, records, 5000):
        chosen = rng.choices(keys, weights, k=min(5000, records - first))
        events = [UsageRecorded(
            event_id=uuid.uuid4(), occurred_at=START + timedelta(seconds=rng.randrange(92 * 86400)),
            source="bench", request_id=f"r{first + n}", api_key_id=key,
            model=MODELS[rng.randrange(50)], provider="openai",
            prompt_tokens=rng.randrange(5000), completion_tokens=rng.randrange(800),
            status="success", cost_usd=Decimal(rng.randrange(10**6)) / Decimal(10**9))
            for n, key in enumerate(chosen)]
        envelopes = [Envelope("usage", 0, first + n, None, e) for n, e in enumerate(events)]
        await projection.prepare(conn, envelopes)
        async with conn.transaction():
            await projection.apply(conn, envelopes)
    await conn.execute("ANALYZE")
    return keys


async def timed(label: str, work: object, rows: list[tuple[str, str]]) -> object:
    started = time.perf_counter()
    result = await work  # type: ignore[misc]
    rows.append((label, f"{(time.perf_counter() - started) * 1000:,.0f} ms"))
    return result


async def longest_batch_wait(dsn: str, done: asyncio.Event) -> float:
    """Act as a projector: take the usage lock shared in a transaction, over and over."""
    conn = await asyncpg.connect(dsn)
    longest = 0.0
    try:
        while not done.is_set():
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                                   lock_key(UsageProjection.name))
            longest = max(longest, time.perf_counter() - started)
    finally:
        await conn.close()
    return longest


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--damage", type=int, default=25)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    async with migrated_database("bench-reconcile-") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            keys = await timed(f"seed {args.records:,} records", seed(conn, args.records), rows)
            assert isinstance(keys, list)
            summaries = await conn.fetchval("SELECT count(*) FROM monthly_usage_summaries")
            rows.append(("summary rows", f"{summaries:,}"))
            clean = await timed("compare, everything (clean)", compare(conn), rows)
            assert clean == []
            await timed("compare, --month 2026-09", compare(conn, Scope(month=date(2026, 9, 1))),
                        rows)
            await timed("compare, --key (the busiest key)",
                        compare(conn, Scope(key_id=keys[0])), rows)
            damaged = await conn.fetch(
                "SELECT api_key_id, model, month FROM monthly_usage_summaries "
                "ORDER BY random() LIMIT $1", args.damage)
            groups = [(r["api_key_id"], r["model"], r["month"]) for r in damaged]
            for n, (key, model, month) in enumerate(groups):
                change = "DELETE FROM monthly_usage_summaries" if n % 5 == 0 else \
                    "UPDATE monthly_usage_summaries SET cost_usd = cost_usd + 1"
                await conn.execute(f"{change} WHERE api_key_id = $1 AND model = $2 "
                                   "AND month = $3", key, model, month)
            await timed(f"compare the {len(groups)} damaged groups only",
                        compare_groups(conn, groups), rows)
            done = asyncio.Event()
            probe = asyncio.create_task(longest_batch_wait(dsn, done))
            repaired = await timed(f"repair {len(groups)} damaged summaries (total)",
                                   repair(conn), rows)
            done.set()
            rows.append(("longest wait of a batch for the lock during the repair",
                         f"{await probe * 1000:,.1f} ms"))
            assert isinstance(repaired, list) and len({d.group for d in repaired}) == len(groups)
            assert await compare(conn) == []
        finally:
            await conn.close()
    print("| measure | value |\n| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    asyncio.run(main())
