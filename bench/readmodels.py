"""Benchmark of the read models (a script, not a test).

    .venv/bin/python bench/readmodels.py [--lookups N] [--trials N] [--explain]

Uses DATABASE_URL's server when set (in a scratch database it creates and drops), otherwise
starts an embedded PostgreSQL in a temporary directory. Measures, in one process: cached
lookup latency (p50/p99, microseconds) and lookups per second, uncached lookup latency, the
hit rate of a Zipf workload over 2,000 keys and 500 models; and, across two processes, how long
a revocation takes from the writer's transaction start to the other process refusing the key.
``--explain`` also loads usage rows and prints the plan of each usage query.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg

# This file is itself named readmodels.py: put the repository first so the package wins.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.invalidation import CHANNEL, Invalidation, encode
from ledger.keys import generate_key, hash_key
from ledger.settings import Settings
from ops.devstack import EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator
from readmodels import ReadModels

ROOT = Path(__file__).resolve().parents[1]
KEYS, MODELS, ZIPF_S = 2000, 500, 1.1
PROVIDERS = ("openai", "anthropic", "google", "mistral", "cohere")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A migrated scratch database; dropped (and the embedded server stopped) afterwards."""
    server: EmbeddedPostgres | None = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-readmodels-")
    admin = os.environ.get("DATABASE_URL")
    if admin is None:
        server = EmbeddedPostgres(Path(tmp.name) / "pgdata", free_port())
        server.start()
        admin = server.dsn
    name = f"bench_rm_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = admin.rpartition("/")[0] + "/" + name
    try:
        conn = await asyncpg.connect(dsn)
        await Migrator(conn).migrate()
        await conn.close()
        yield dsn
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
        if server is not None:
            server.stop(mode="immediate")
        tmp.cleanup()


async def seed(conn: asyncpg.Connection) -> tuple[list[str], list[uuid.UUID], list[str]]:
    now = datetime.now(UTC)
    await conn.executemany("INSERT INTO providers (name) VALUES ($1)", [(p,) for p in PROVIDERS])
    models = [f"model-{i:03d}" for i in range(MODELS)]
    await conn.executemany(
        """INSERT INTO models (name, provider, mode, input_cost_per_token, raw, valid_from)
           VALUES ($1, $2, 'chat', 0.000001, '{}'::jsonb, now())""",
        [(m, PROVIDERS[i % len(PROVIDERS)]) for i, m in enumerate(models)],
    )
    plaintexts = [generate_key() for _ in range(KEYS)]
    ids = [uuid.uuid4() for _ in range(KEYS)]
    await conn.executemany(
        """INSERT INTO api_keys (id, key_hash, name, owner, created_at, updated_at)
           VALUES ($1, $2, 'bench', $3, $4, $4)""",
        [(i, hash_key(p), f"team-{n % 50}", now) for n, (i, p) in
         enumerate(zip(ids, plaintexts, strict=True))],
    )
    return plaintexts, ids, models


def settings(dsn: str, **overrides: object) -> Settings:
    return Settings(database_url=dsn, **overrides)  # type: ignore[arg-type]


async def timed(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        started = clock()
        await call()
        out.append((clock() - started) / 1000)
    return out


async def bench_lookups(dsn: str, hashes: list[str], models: list[str], n: int) -> None:
    async with ReadModels.open(settings(dsn, cache_api_key_size=4096)) as rm:
        for h in hashes:
            await rm.keys.get_by_hash(h)
        sample = [random.choice(hashes) for _ in range(n)]
        get = rm.keys.get_by_hash
        started = time.perf_counter()
        for h in sample:
            await get(h)
        rate = n / (time.perf_counter() - started)
        it = itertools.cycle(sample)
        lat = await timed(lambda: get(next(it)), min(n, 200_000))
        print(f"cached get_by_hash: {rate:,.0f} lookups/s; "
              f"p50 {pct(lat, .5):.2f} us, p99 {pct(lat, .99):.2f} us")
        for m in models:
            await rm.models.get_by_name(m)
        names = itertools.cycle([random.choice(models) for _ in range(10_000)])
        lat = await timed(lambda: rm.models.get_by_name(next(names)), 200_000)
        print(f"cached get_by_name: p50 {pct(lat, .5):.2f} us, p99 {pct(lat, .99):.2f} us")


async def bench_authorize(dsn: str, plaintexts: list[str], n: int) -> None:
    """authorize on cached keys: SHA-256 of the plaintext, the lookup and the checks."""
    async with ReadModels.open(settings(dsn, cache_api_key_size=4096)) as rm:
        for p in plaintexts:
            await rm.keys.authorize(p, "model-001")
        it = itertools.cycle([random.choice(plaintexts) for _ in range(10_000)])
        started = time.perf_counter()
        for _ in range(n):
            await rm.keys.authorize(next(it), "model-001")
        rate = n / (time.perf_counter() - started)
        lat = await timed(lambda: rm.keys.authorize(next(it), "model-001"), 100_000)
        print(f"cached authorize (SHA-256 + lookup): {rate:,.0f}/s; "
              f"p50 {pct(lat, .5):.2f} us, p99 {pct(lat, .99):.2f} us")


async def bench_uncached(dsn: str, hashes: list[str], models: list[str]) -> None:
    async with ReadModels.open(settings(dsn)) as rm:
        await rm.ping()
        lat = []
        for h in hashes:  # every key once: each lookup is a miss and a query
            started = time.perf_counter_ns()
            await rm.keys.get_by_hash(h)
            lat.append((time.perf_counter_ns() - started) / 1000)
        print(f"uncached get_by_hash: p50 {pct(lat, .5):.0f} us, p99 {pct(lat, .99):.0f} us")
        lat = []
        for m in models:
            started = time.perf_counter_ns()
            await rm.models.get_by_name(m)
            lat.append((time.perf_counter_ns() - started) / 1000)
        print(f"uncached get_by_name: p50 {pct(lat, .5):.0f} us, p99 {pct(lat, .99):.0f} us")


async def bench_zipf(dsn: str, hashes: list[str], models: list[str], n: int,
                     key_cache: int) -> None:
    weights = [1 / (rank ** ZIPF_S) for rank in range(1, KEYS + 1)]
    key_draws = random.choices(hashes, weights=weights, k=n)
    model_weights = [1 / (rank ** ZIPF_S) for rank in range(1, MODELS + 1)]
    model_draws = random.choices(models, weights=model_weights, k=n)
    async with ReadModels.open(settings(dsn, cache_api_key_size=key_cache)) as rm:
        for h, m in zip(key_draws, model_draws, strict=True):
            await rm.keys.get_by_hash(h)
            await rm.models.get_by_name(m)
        stats = rm.stats().caches
        keys, mods = stats["api_keys"], stats["models"]
        total = (keys.hits + mods.hits) / (keys.hits + keys.misses + mods.hits + mods.misses)
        print(f"zipf s={ZIPF_S} over {KEYS} keys / {MODELS} models, {n:,} requests, key cache "
              f"{key_cache}, model cache 500: hit rate keys {keys.hit_rate:.4%}, models "
              f"{mods.hit_rate:.4%}, overall {total:.4%}")


_WATCHER = """
import asyncio, sys, time
from readmodels import ReadModels
async def main(dsn):
    keys = sys.argv[2:]
    async with ReadModels.open(dsn) as rm:
        for k in keys:
            assert (await rm.keys.authorize(k, "model-001")).allowed
        print("ready", flush=True)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            key = keys[int(line)]
            print("watching", flush=True)
            while (await rm.keys.authorize(key, "model-001")).allowed:
                await asyncio.sleep(0)
            print(time.monotonic(), flush=True)
asyncio.run(main(sys.argv[1]))
"""


async def bench_revocation(dsn: str, plaintexts: list[str], ids: list[uuid.UUID],
                           trials: int) -> None:
    chosen = list(range(trials))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WATCHER, dsn, *(plaintexts[i] for i in chosen),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert (await child.stdout.readline()).strip() == b"ready"
    conn = await asyncpg.connect(dsn)
    lat = []
    for n, i in enumerate(chosen):
        child.stdin.write(f"{n}\n".encode())
        await child.stdin.drain()
        assert (await child.stdout.readline()).strip() == b"watching"
        started = time.monotonic()
        async with conn.transaction():
            key_hash = await conn.fetchval(
                "UPDATE api_keys SET revoked_at = now(), updated_at = now() WHERE id = $1 "
                "RETURNING key_hash", ids[i])
            change = Invalidation(key_hashes=frozenset({key_hash}),
                                  key_ids=frozenset({str(ids[i])}))
            for payload in encode(change):
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        refused = float(await child.stdout.readline())
        lat.append((refused - started) * 1000)
    child.stdin.close()
    await child.wait()
    await conn.close()
    print(f"revocation across processes ({trials} trials, writer transaction start -> other "
          f"process refuses): p50 {pct(lat, .5):.2f} ms, p99 {pct(lat, .99):.2f} ms, "
          f"max {max(lat):.2f} ms")


async def explain(dsn: str, ids: list[uuid.UUID], rows: int) -> None:
    """Load ``rows`` usage records over three monthly partitions and print generic plans."""
    conn = await asyncpg.connect(dsn)
    for month in ("2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"):
        end = datetime.fromisoformat(month) + timedelta(days=32)
        await conn.execute(f"CREATE TABLE usage_records_{month[:7].replace('-', '')} PARTITION "
                           f"OF usage_records FOR VALUES FROM ('{month}') TO "
                           f"('{end:%Y-%m-01}')")
    started = time.perf_counter()
    await conn.execute(
        f"""INSERT INTO usage_records (event_id, occurred_at, request_id, api_key_id, model,
            prompt_tokens, completion_tokens, status, cost_usd, cost_source, source)
            SELECT gen_random_uuid(),
                   '2026-01-01'::timestamptz + (g::bigint * 7776000 / {rows}) * interval '1s',
                   'r' || g, ($1::uuid[])[1 + g % {len(ids)}],
                   'model-' || lpad((g % {MODELS})::text, 3, '0'), 10, 5, 'success', 0.001,
                   'emitter', 'bench'
            FROM generate_series(1, {rows}) g""", ids)
    # One heavy key (a third as many rows again) shows the plan for a key with many rows.
    await conn.execute(
        f"""INSERT INTO usage_records (event_id, occurred_at, request_id, api_key_id, model,
            prompt_tokens, completion_tokens, status, cost_usd, cost_source, source)
            SELECT gen_random_uuid(),
                   '2026-01-01'::timestamptz + (g::bigint * 7776000 / {rows // 3}) * interval
                   '1s', 'h' || g, $1, 'model-007', 10, 5, 'success', 0.001, 'emitter', 'bench'
            FROM generate_series(1, {rows // 3}) g""", ids[0])
    await conn.execute(
        """INSERT INTO monthly_usage_summaries (api_key_id, model, month, requests, cost_usd,
           first_occurred_at, last_occurred_at)
           SELECT api_key_id, model, date_trunc('month', occurred_at, 'UTC')::date, count(*),
                  sum(cost_usd), min(occurred_at), max(occurred_at)
           FROM usage_records GROUP BY 1, 2, 3""")
    await conn.execute("ANALYZE")
    print(f"\nloaded {rows + rows // 3:,} usage records in "
          f"{time.perf_counter() - started:.0f}s; plans with plan_cache_mode = "
          "force_custom_plan, as the usage reads set it (SET LOCAL):")
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    # The statements the readers send (private names: this script measures the module).
    from readmodels.usage import _MONTH, _QUERIES, _SPEND, _SUMMARIES, _TOTALS

    lo, hi = datetime(2026, 1, 3, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)
    cursor = (datetime(2026, 1, 3, tzinfo=UTC), uuid.UUID(int=0))
    feb, mar, zero = date(2026, 2, 1), date(2026, 3, 1), datetime(2026, 2, 1, tzinfo=UTC)
    for who, key in (("heavy key", ids[0]), ("ordinary key", ids[1])):
        statements: dict[str, tuple[str, tuple[object, ...]]] = {
            "records_by_key, first page": (_QUERIES["api_key_id"][0], (key, lo, hi, 101)),
            "records_by_key, next page": (_QUERIES["api_key_id"][1],
                                          (key, lo, hi, *cursor, 101)),
            "totals (Jan 3 - Mar 20: February from the summaries)": (
                _TOTALS, (key, lo, hi, feb, mar, zero, datetime(2026, 3, 1, tzinfo=UTC))),
            "monthly": (_MONTH, (key, feb)),
            "month_to_date_spend": (_SPEND, (key, feb)),
            "summaries": (_SUMMARIES, (key, date(1, 1, 1), date(9999, 12, 1))),
        }
        if who == "heavy key":
            statements["records_by_model, next page (model-007)"] = (
                _QUERIES["model"][1], ("model-007", lo, hi, *cursor, 101))
        for title, (sql, args) in statements.items():
            plan = await conn.fetch(
                f"EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON, BUFFERS OFF) {sql}", *args)
            print(f"\n-- {title} ({who})\n" + "\n".join(r[0] for r in plan))
    await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--explain-rows", type=int, default=300_000)
    options = parser.parse_args()
    random.seed(7)
    async with database() as dsn:
        conn = await asyncpg.connect(dsn)
        plaintexts, ids, models = await seed(conn)
        await conn.close()
        hashes = [hash_key(p) for p in plaintexts]
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        await bench_lookups(dsn, hashes, models, options.lookups)
        await bench_authorize(dsn, plaintexts, options.lookups // 4)
        await bench_uncached(dsn, hashes, models)
        await bench_zipf(dsn, hashes, models, options.lookups, key_cache=4096)
        await bench_zipf(dsn, hashes, models, options.lookups, key_cache=1000)
        await bench_revocation(dsn, plaintexts, ids, options.trials)
        if options.explain:
            await explain(dsn, ids, options.explain_rows)


if __name__ == "__main__":
    asyncio.run(main())
