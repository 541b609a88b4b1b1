"""Where the usage statement's PostgreSQL time goes (a script, not a test; not in make bench).

    .venv/bin/python bench/pg_costs.py [--events 100000] [--batch 5000]

Applies the same gateway traffic (bench/projector.py's) with the usage projection straight
from Python (no Kafka), once per schema variant, each on a fresh database, and prints the
time of the one set-based statement (dedup claim, records, summaries) per event: the
schema as migrated, and with one index or the claim table's work taken away. The variants
that drop something are measurements of what it costs, not proposals: each thing dropped
has a reader (docs/projections.md says which).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import asyncpg
from projector import gateway_traffic
from scratch_db import migrated_database

import projections.usage as usage_module
from projections.base import Envelope
from projections.usage import UsageProjection

VARIANTS = {
    "as migrated": [],
    "without usage_records_model_time": ["DROP INDEX usage_records_model_time"],
    "without usage_records_key_time": ["DROP INDEX usage_records_key_time"],
    "without usage_records' primary key": [
        "ALTER TABLE usage_records DROP CONSTRAINT usage_records_pkey"],
}


async def measure(dsn: str, ddl: list[str], events: list[Envelope], batch: int) -> float:
    admin = await asyncpg.connect(dsn)
    name = f"pgcost_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE template_ledger")
    conn = await asyncpg.connect(dsn.rsplit("/", 1)[0] + f"/{name}")
    for statement in ddl:
        await conn.execute(statement)
    projection = UsageProjection()
    spent = 0.0

    async def timed(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]
                    ) -> tuple[int, list[str], set[uuid.UUID]]:
        """UsageProjection._copy_and_upsert, with the statement (not the COPY) timed."""
        nonlocal spent
        await conn.copy_records_to_table("usage_stage", records=rows,
                                         columns=usage_module._STAGE_COLUMNS)
        started = time.perf_counter()
        result = await conn.fetchrow(usage_module._INSERTED_AND_SUMMED)
        spent += time.perf_counter() - started
        assert result is not None
        return int(result["inserted"]), list(result["key_ids"] or []), set()

    projection._copy_and_upsert = timed  # type: ignore[method-assign]
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        await projection.prepare(conn, chunk)
        async with conn.transaction():
            await projection.apply(conn, chunk)
    await conn.close()
    await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    await admin.close()
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    events = [Envelope("usage", 0, i, None, e)
              for i, e in enumerate(gateway_traffic(args.events))]
    async with migrated_database("bench-pgcost-") as dsn:
        admin = await asyncpg.connect(dsn)
        await admin.execute("CREATE DATABASE template_ledger TEMPLATE " + dsn.rsplit("/", 1)[1])
        await admin.close()
        results: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):  # interleaved, so the machine's load hits all alike
            for name, ddl in VARIANTS.items():
                results[name].append(await measure(dsn, ddl, events, args.batch))
    print(f"{len(events):,} events ({args.events:,} unique) in batches of {args.batch:,}; "
          "the set-based statement's time per event, best of "
          f"{args.rounds} interleaved rounds:")
    base = min(results["as migrated"])
    for name, times in results.items():
        best = min(times)
        print(f"  {name:<40} {best / len(events) * 1e6:6.1f} us/event  "
              f"({best / base:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
