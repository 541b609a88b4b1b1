"""Benchmark of ``ledger rebuild usage`` (a script, not a test).

    .venv/bin/python bench/rebuild.py [--events 200000]

Starts a private embedded PostgreSQL and broker (or uses DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS),
fills the usage topic with bench/projector.py's gateway traffic (1% re-sent duplicates),
projects it live with one worker, then rebuilds the usage projection from the log and
reports the replay rate (from the first progress report to the last, as the CLI's progress
bar shows it) and the whole rebuild's time, swap and index builds included. Checks that the
rebuilt tables hold every event once and their summaries add up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import asyncpg
from projector import Stack, check_totals, filled_topic, scratch_db, stack

from projections import ProjectionRunner, make_projection
from projections.gc_tuning import tune_for_batches
from projections.rebuild import Rebuilder


async def project_live(s: Stack, dsn: str, settings: Any, total: int) -> None:
    runner = ProjectionRunner(make_projection("usage"), settings, dsn=dsn,
                              bootstrap_servers=s.bootstrap, max_records=10_000)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    while sum(runner.positions.values()) < total:
        await asyncio.sleep(0.05)
    stop.set()
    await task


async def rebuild(s: Stack, n: int, batch: int) -> dict[str, Any]:
    async with scratch_db(s.dsn) as dsn:
        settings, total = await filled_topic(s, dsn, n)
        await project_live(s, dsn, settings, total)
        marks: list[tuple[float, int]] = []

        def progress(done: int, _total: int) -> None:
            marks.append((time.perf_counter(), done))

        rebuilder = Rebuilder(make_projection("usage"), settings, dsn=dsn,
                              bootstrap_servers=s.bootstrap, batch_size=batch)
        tune_for_batches()  # as the ``ledger rebuild`` process does
        started = time.perf_counter()
        applied = await rebuilder.run(progress)
        elapsed = time.perf_counter() - started
        await check_totals(dsn, n)
        conn = await asyncpg.connect(dsn)
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'usage_records%'")
        await conn.close()
        (t0, d0), (t1, d1) = marks[0], marks[-1]
        return {"events": total, "applied": applied, "batch": batch,
                "replay_events_per_s": round((d1 - d0) / (t1 - t0)),
                "rebuild_seconds": round(elapsed, 1),
                "whole_rebuild_events_per_s": round(total / elapsed),
                "usage_records_indexes_after": indexes}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[5000],
                        help="the rebuild's batch size; several: one rebuild each, in turn")
    args = parser.parse_args()
    async with stack() as s:
        results = [await rebuild(s, args.events, batch) for batch in args.batch]
    print(json.dumps(results if len(results) > 1 else results[0], indent=2))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
