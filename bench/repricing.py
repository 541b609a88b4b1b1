"""Benchmark of re-pricing: what a catalog batch costs when usage came first (a script).

    .venv/bin/python bench/repricing.py [--records 200000]

Starts a private embedded PostgreSQL (or uses DATABASE_URL), projects ``--records`` usage
events without a cost (1,000 keys, 50 chat models of the packaged snapshot, some asked as
``provider/name`` or in capitals, three months) before any catalog exists, so all are
unpriced. Then applies catalog batches with the catalog projection's own code and times each,
with the longest a usage batch waited for its advisory lock meanwhile (a probe takes it
shared in a loop, as batches do):

1. the whole snapshot, prices valid from before the usage (every record is re-priced);
2. a price change of one model valid from now (reaches nothing: the usual import);
3. a price change of the busiest model valid from the middle of the usage;
4. an alias set for a name the usage uses.

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

# The repository first: bench/readmodels.py would otherwise stand in for the readmodels package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from scratch_db import migrated_database

from ledger.catalog import load_snapshot
from ledger.events import EventBase, ModelAliasSet, ModelUpserted, UsageRecorded
from ops.catalog_import import CatalogState, plan_import
from projections.base import Envelope, lock_key
from projections.catalog import CatalogProjection
from projections.usage import UsageProjection

START = datetime(2026, 8, 1, tzinfo=UTC)


def chat_models(snapshot: dict[str, dict[str, object]]) -> list[tuple[str, str]]:
    found = [(name, str(entry["litellm_provider"])) for name, entry in sorted(snapshot.items())
             if entry.get("mode") == "chat" and "/" not in name
             and isinstance(entry.get("litellm_provider"), str)
             and entry.get("input_cost_per_token") is not None]
    return found[:50]


async def seed(conn: asyncpg.Connection, records: int, models: list[tuple[str, str]]) -> None:
    rng = random.Random(5)
    keys = [uuid.uuid4() for _ in range(1000)]
    weights = [1 / (rank + 1) for rank in range(len(keys))]
    spellings = [name for name, _ in models] + [f"{provider}/{name}" for name, provider in
                                                models[:10]] + [name.upper() for name, _ in
                                                                models[10:15]]
    projection = UsageProjection()
    for first in range(0, records, 5000):
        chosen = rng.choices(keys, weights, k=min(5000, records - first))
        events = [UsageRecorded(
            event_id=uuid.uuid4(), occurred_at=START + timedelta(seconds=rng.randrange(92 * 86400)),
            source="bench", request_id=f"r{first + n}", api_key_id=key,
            model=spellings[min(int(rng.expovariate(0.1)), len(spellings) - 1)],
            prompt_tokens=rng.randrange(5000), completion_tokens=rng.randrange(800),
            status="success") for n, key in enumerate(chosen)]
        await apply(conn, projection, events)
    await conn.execute("ANALYZE")


async def apply(conn: asyncpg.Connection, projection: object, events: Sequence[EventBase]) -> int:
    assert isinstance(projection, CatalogProjection | UsageProjection)
    envelopes = [Envelope(projection.name, 0, n, None, e) for n, e in enumerate(events)]
    await projection.prepare(conn, envelopes)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                           lock_key(projection.name))
        result = await projection.apply(conn, envelopes)
    return result.repriced


async def probe(dsn: str, stop: asyncio.Event) -> float:
    """The longest wait for the usage lock, taken shared in a loop as batches take it."""
    conn = await asyncpg.connect(dsn)
    longest = 0.0
    try:
        while not stop.is_set():
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                                   lock_key("usage"))
            longest = max(longest, time.perf_counter() - started)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return longest


async def timed(dsn: str, conn: asyncpg.Connection, events: Sequence[EventBase]) -> str:
    stop = asyncio.Event()
    waiting = asyncio.create_task(probe(dsn, stop))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    repriced = await apply(conn, CatalogProjection(), events)
    seconds = time.perf_counter() - started
    stop.set()
    longest = await waiting
    return f"{len(events):,} | {repriced:,} | {seconds:.2f} s | {longest * 1000:.0f} ms"


async def main(records: int) -> None:
    snapshot = load_snapshot()
    models = chat_models(snapshot)
    async with migrated_database("bench-repricing-") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            started = time.perf_counter()
            await seed(conn, records, models)
            print(f"seeded {records:,} unpriced usage records in "
                  f"{time.perf_counter() - started:.0f} s\n")
            print("| catalog batch | events | usage re-priced | time | longest usage wait |")
            print("| --- | ---: | ---: | ---: | ---: |")
            plan = plan_import(snapshot, CatalogState({}, {}, frozenset()),
                               valid_from=START - timedelta(days=30))
            print(f"| whole snapshot, valid before the usage | "
                  f"{await timed(dsn, conn, plan.events)} |")
            busiest, _ = models[0]
            now = datetime.now(UTC)

            def change(valid_from: datetime, price: str) -> ModelUpserted:
                raw = {**snapshot[busiest], "input_cost_per_token": Decimal(price)}
                return ModelUpserted(event_id=uuid.uuid4(), occurred_at=now, source="bench",
                                     name=busiest, raw=raw, valid_from=valid_from)

            print(f"| one price, valid from now | "
                  f"{await timed(dsn, conn, [change(now, '0.000123')])} |")
            print(f"| one price of the busiest model, valid mid-usage | "
                  f"{await timed(dsn, conn, [change(START + timedelta(days=46), '0.000321')])} |")
            alias = ModelAliasSet(event_id=uuid.uuid4(), occurred_at=now, source="bench",
                                  alias=models[12][0].upper(), model=busiest)
            print(f"| an alias for a name the usage uses | {await timed(dsn, conn, [alias])} |")
        finally:
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().records))
