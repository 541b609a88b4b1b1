"""Benchmark of budget reservations (a script, not a test).

    .venv/bin/python bench/budgets.py [--calls N] [--processes N] [--concurrency N]
                                      [--phases leases,processes,projector]

Uses DATABASE_URL's server when set, otherwise an embedded PostgreSQL in a temporary
directory. Measures ``authorize(..., estimate_usd=)`` in one process far from the cap and
near it (p50/p99, microseconds; with leases, and with per-request reservation for
comparison), then N processes x C concurrent requests reserving against one cap until it is
refused: reservations per second, overspend (reserved beyond the cap; target 0) and budget
stranded at the end, once every process closed (target: at most the largest estimate).
No projector runs: every hold stays open, so what was reserved is what could be spent with
actual costs at or below the estimates. Last, what the budget work costs a usage batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch_db import migrated_database
from ledger.events import UsageRecorded
from ledger.keys import generate_key, hash_key
from ledger.settings import Settings
from projections.base import Envelope
from projections.usage import UsageProjection
from readmodels import ReadModels, Reason
from readmodels import reservations as budget_module

ESTIMATES = [Decimal("0.001"), Decimal("0.002"), Decimal("0.005"), Decimal("0.01")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def settings(dsn: str) -> Settings:
    return Settings(database_url=dsn, db_max_open_conns=8, db_max_idle_conns=2)


async def add_key_with_budget(dsn: str, limit: Decimal) -> str:
    plaintext = generate_key()
    conn = await asyncpg.connect(dsn)
    try:
        key_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO api_keys (id, key_hash, name, created_at, updated_at) "
            "VALUES ($1, $2, 'bench', now(), now())", key_id, hash_key(plaintext))
        await conn.execute(
            "INSERT INTO budgets (scope, limit_usd, period, timezone, alert_thresholds, "
            "updated_at) VALUES ($1, $2, 'day', 'Europe/Paris', '{50,80,100}', now())",
            f"key:{key_id}", limit)
    finally:
        await conn.close()
    return plaintext


async def scope_of(dsn: str, plaintext: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        key_id = await conn.fetchval("SELECT id FROM api_keys WHERE key_hash = $1",
                                     hash_key(plaintext))
    finally:
        await conn.close()
    return f"key:{key_id}"


async def one_process(dsn: str, calls: int, lease_requests: int) -> dict[str, Any]:
    """Far from the cap: every call allowed; then spend a small cap down to refusal."""
    budget_module.LEASE_REQUESTS = lease_requests
    far = await add_key_with_budget(dsn, Decimal(10**6))
    near = await add_key_with_budget(dsn, Decimal("20"))
    estimate = Decimal("0.002")
    async with ReadModels.open(settings(dsn)) as rm:
        authorize = rm.keys.authorize
        for _ in range(2000):  # warm the caches and the first lease
            await authorize(far, "gpt-4o", estimate_usd=estimate)
        leases = rm.budgets.leases
        far_us = []
        for _ in range(calls):
            started = time.perf_counter_ns()
            decision = await authorize(far, "gpt-4o", estimate_usd=estimate)
            far_us.append((time.perf_counter_ns() - started) / 1000)
            assert decision.allowed
            await asyncio.sleep(0)  # a gateway awaits its provider between requests
        far_leases = rm.budgets.leases - leases
        # Near the cap: the last tenth of a 20 USD budget (1,000 calls of 0.002).
        near_us: list[float] = []
        granted = Decimal(0)
        while True:
            started = time.perf_counter_ns()
            decision = await authorize(near, "gpt-4o", estimate_usd=estimate)
            elapsed = (time.perf_counter_ns() - started) / 1000
            if not decision.allowed:
                assert decision.reason is Reason.OVER_BUDGET
                break
            granted += estimate
            if granted > Decimal("18"):
                near_us.append(elapsed)
            await asyncio.sleep(0)
    return {
        "lease_requests": lease_requests,
        "far_from_cap": {"calls": calls, "p50_us": round(pct(far_us, 0.5), 2),
                         "p99_us": round(pct(far_us, 0.99), 2),
                         "round_trips": far_leases},
        "near_cap": {"calls": len(near_us), "p50_us": round(pct(near_us, 0.5), 2),
                     "p99_us": round(pct(near_us, 0.99), 2), "granted_usd": str(granted)},
    }


async def worker(dsn: str, plaintext: str, concurrency: int, seed: int) -> dict[str, Any]:
    """One gateway process: ``concurrency`` tasks reserve until refused three times each."""
    rng = random.Random(seed)
    granted = [0, Decimal(0)]
    async with ReadModels.open(settings(dsn)) as rm:
        await rm.keys.authorize(plaintext, "gpt-4o")

        async def task() -> None:
            refusals = 0
            while refusals < 3:
                estimate = rng.choice(ESTIMATES)
                decision = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
                if decision.allowed:
                    granted[0] += 1
                    granted[1] += estimate
                    refusals = 0
                    await asyncio.sleep(0)  # the call to the provider, elsewhere
                else:
                    refusals += 1
                    await asyncio.sleep(0.05)

        started = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        leases = rm.budgets.leases
    return {"granted": granted[0], "granted_usd": str(granted[1]), "seconds": seconds,
            "round_trips": leases}


async def processes(dsn: str, count: int, concurrency: int, cap: Decimal) -> dict[str, Any]:
    plaintext = await add_key_with_budget(dsn, cap)
    scope = await scope_of(dsn, plaintext)
    started = time.perf_counter()
    children = [subprocess.Popen(
        [sys.executable, __file__, "--worker", dsn, plaintext, str(concurrency), str(seed)],
        stdout=subprocess.PIPE, text=True) for seed in range(count)]
    outputs = [json.loads(child.communicate()[0]) for child in children]
    wall = time.perf_counter() - started
    granted_usd = sum((Decimal(o["granted_usd"]) for o in outputs), Decimal(0))
    granted = sum(o["granted"] for o in outputs)
    conn = await asyncpg.connect(dsn)
    try:
        open_leases = await conn.fetchval(
            "SELECT coalesce(sum(greatest(amount - settled - returned, 0)), 0) "
            "FROM budget_leases WHERE expires_at > now() AND scope = $1", scope)
    finally:
        await conn.close()
    busiest = max(o["seconds"] for o in outputs)
    return {
        "processes": count, "concurrency": concurrency, "cap_usd": str(cap),
        "reservations": granted, "round_trips": sum(o["round_trips"] for o in outputs),
        "reservations_per_s": round(granted / busiest),
        "wall_seconds_with_startup": round(wall, 2),
        "reserved_usd": str(granted_usd),
        "overspend_usd": str(max(granted_usd - cap, Decimal(0))),
        "stranded_usd": str(cap - granted_usd),
        "largest_estimate_usd": str(max(ESTIMATES)),
        "reserved_in_db_at_end_usd": str(open_leases),
    }


async def projector_cost(dsn: str, batches: int = 30, size: int = 2000) -> dict[str, Any]:
    """The usage batch with its budget work (1,000 keys, each with max_budget_usd and an
    owner with a day budget) against the same statement without it (a rebuild's replay),
    interleaved batch by batch on one connection."""
    conn = await asyncpg.connect(dsn)
    try:
        keys = [uuid.uuid4() for _ in range(1000)]
        await conn.executemany(
            "INSERT INTO api_keys (id, key_hash, name, owner, max_budget_usd, created_at, "
            "updated_at) VALUES ($1, $2, 'k', $3, 1000, now(), now())",
            [(k, uuid.uuid4().hex * 2, f"team-{i % 10}") for i, k in enumerate(keys)])
        await conn.executemany(
            "INSERT INTO budgets VALUES ($1, 500, 'day', 'Europe/Paris', '{50,80,100}', now())",
            [(f"owner:team-{t}",) for t in range(10)])
        rng = random.Random(7)

        def batch() -> list[Envelope]:
            return [Envelope("usage", 0, 0, None, UsageRecorded(
                event_id=uuid.uuid4(), occurred_at=datetime.now(UTC), source="bench",
                request_id="r", api_key_id=rng.choice(keys), model="gpt-4o",
                prompt_tokens=10, completion_tokens=5, status="success",
                cost_usd=Decimal("0.0001"))) for _ in range(size)]

        live, replay = UsageProjection(), UsageProjection()
        replay.rebuilding = True
        seconds: dict[str, list[float]] = {"with_budgets": [], "without": []}
        for _ in range(batches):
            for name, projection in (("with_budgets", live), ("without", replay)):
                envelopes = batch()
                await projection.prepare(conn, envelopes)
                started = time.perf_counter()
                async with conn.transaction():
                    await projection.apply(conn, envelopes)
                seconds[name].append(time.perf_counter() - started)
    finally:
        await conn.close()
    medians = {name: pct(values[3:], 0.5) for name, values in seconds.items()}
    return {
        "batch": size,
        **{f"{name}_events_per_s": round(size / median) for name, median in medians.items()},
        "budget_overhead_pct": round(100 * (medians["with_budgets"] / medians["without"] - 1), 1),
    }


async def main(args: argparse.Namespace) -> None:
    phases = set(args.phases.split(","))
    results: dict[str, Any] = {}
    async with migrated_database("bench-budgets-") as dsn:
        if "leases" in phases:
            results["leases"] = await one_process(dsn, args.calls, budget_module.LEASE_REQUESTS)
            results["per_request"] = await one_process(dsn, max(args.calls // 20, 1000), 1)
        if "processes" in phases:
            results["processes"] = await processes(dsn, args.processes, args.concurrency,
                                                   Decimal(args.cap))
        if "projector" in phases:
            results["projector"] = await projector_cost(dsn)
    print(json.dumps(results, indent=2))
    if "projector" in results:
        cost = results["projector"]
        print(f"usage batch of {cost['batch']}: {cost['with_budgets_events_per_s']:,} events/s "
              f"with budget work, {cost['without_events_per_s']:,} without "
              f"(+{cost['budget_overhead_pct']}%)")
    if not {"leases", "processes"} <= results.keys():
        return
    lease, single, procs = results["leases"], results["per_request"], results["processes"]
    print(f"authorize with estimate, far from the cap: p50 {lease['far_from_cap']['p50_us']} us, "
          f"p99 {lease['far_from_cap']['p99_us']} us (per-request reservation: p50 "
          f"{single['far_from_cap']['p50_us']} us, p99 {single['far_from_cap']['p99_us']} us)")
    print(f"authorize with estimate, near the cap: p50 {lease['near_cap']['p50_us']} us, "
          f"p99 {lease['near_cap']['p99_us']} us")
    print(f"{procs['processes']} processes x {procs['concurrency']}: "
          f"{procs['reservations_per_s']:,} reservations/s, overspend "
          f"{procs['overspend_usd']} USD, stranded {procs['stranded_usd']} USD "
          f"(largest estimate {procs['largest_estimate_usd']})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, dsn_, key_, concurrency_, seed_ = sys.argv
        print(json.dumps(asyncio.run(worker(dsn_, key_, int(concurrency_), int(seed_)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cap", default="100")
    parser.add_argument("--phases", default="leases,processes,projector",
                        help="comma separated: leases, processes, projector")
    asyncio.run(main(parser.parse_args()))
