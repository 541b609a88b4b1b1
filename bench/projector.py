"""Benchmark of the usage projector (a script, not a test).

    .venv/bin/python bench/projector.py [--events 200000] [--baseline 10000] [--peer 10000]
        [--rate 10000]

Starts a private embedded PostgreSQL and broker (or uses DATABASE_URL/KAFKA_BOOTSTRAP_SERVERS)
and measures, in one run:

* ``sustained``: events already in the topic, one worker (one process), timed from its
  partition assignment to the last commit: Kafka -> decode -> COPY -> dedup -> summaries.
* ``sustained_2_processes``: two ``ledger project`` processes, timed from the first
  committed batch (their assignment is not visible from outside) to the last.
* ``baseline``: the repository pattern a gateway would write first, one transaction per event
  with an INSERT and a summary UPSERT, on the same server; and the ratio.
* ``peer``: the ``eventsourcing`` library's PostgreSQL tracking-record projection doing the
  same summary upsert, one transaction per event with its tracking record
  (bench/peer_eventsourcing.py), on the same events and server; and the ratio.
* ``lag``: a fixed offered load (events/s) for a while, the worker in its own process; the
  lag of each event is from its emission to the moment the projector's post-commit
  notification reaches a listener, i.e. when it is queryable. Each event has its own api key
  so its notification names it.

Prints JSON (for bench/run_all.py) and a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from peer_eventsourcing import run_peer

from ledger.events import UsageRecorded
from ledger.invalidation import CHANNEL, decode
from ledger.producer import LedgerProducer
from ledger.settings import Settings
from ledger.topics import ensure_topics, topic_specs
from ops.devstack import EmbeddedBroker, EmbeddedPostgres
from ops.devstack.ports import free_port
from ops.migrate import Migrator
from projections import ProjectionRunner, make_projection
from projections.gc_tuning import tune_for_batches


@dataclass
class Stack:
    dsn: str
    bootstrap: str
    root: str  # a scratch directory removed with the stack
    broker_pid: int | None = None  # the embedded broker's, when this stack started one


@asynccontextmanager
async def stack() -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-projector-") as root:
        pg = broker = None
        dsn = os.environ.get("DATABASE_URL")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        try:
            if dsn is None:
                pg = EmbeddedPostgres(Path(root) / "pg" / "pgdata", free_port())
                pg.start()
                dsn = pg.dsn
            if bootstrap is None:
                broker = EmbeddedBroker(Path(root) / "kafka", free_port())
                broker.start()
                bootstrap = broker.bootstrap_servers
            yield Stack(dsn, bootstrap, root, broker.pid() if broker is not None else None)
        finally:
            if broker is not None:
                broker.stop()
            if pg is not None:
                pg.stop("immediate")


@asynccontextmanager
async def scratch_db(admin_dsn: str) -> AsyncIterator[str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn)
    await Migrator(conn).migrate()
    await conn.close()
    try:
        yield dsn
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


def settings_for(s: Stack, dsn: str) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return Settings(database_url=dsn, kafka_bootstrap_servers=s.bootstrap,
                    topic_usage=f"bench-usage-{suffix}", topic_keys=f"bench-keys-{suffix}",
                    topic_catalog=f"bench-catalog-{suffix}", consumer_group=f"bench-{suffix}")


MODELS = tuple(f"model-{m:02d}" for m in range(50))


def usage(i: int, key: uuid.UUID, when: datetime) -> UsageRecorded:
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=when, source="bench", request_id=f"r{i}",
        api_key_id=key, model=MODELS[(i * 31) % 50 if i % 4 else 0],
        provider="openai", prompt_tokens=100 + i % 900, completion_tokens=20 + i % 300,
        status="success", cost_usd=Decimal(i % 997) / Decimal(10**6))


async def produce(settings: Settings, events: list[UsageRecorded]) -> None:
    async with LedgerProducer.from_settings(settings) as producer:
        for event in events:
            await producer.emit(event)
        await producer.flush()


def gateway_traffic(n: int) -> list[UsageRecorded]:
    """Zipf over 1,000 keys within the last hour (the current month), as it arrives live,
    plus 1% re-sent duplicates; a uniform spread over three months would make nearly every
    event its own summary row."""
    rng = random.Random(1)
    keys = [uuid.uuid4() for _ in range(1000)]
    weights = list(itertools.accumulate(1 / rank ** 1.1 for rank in range(1, 1001)))
    now = datetime.now(UTC)
    events = [usage(i, rng.choices(keys, cum_weights=weights)[0],
                    now - timedelta(seconds=rng.randrange(3600))) for i in range(n)]
    return events + events[: n // 100]


async def check_totals(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetchval("SELECT count(*) FROM usage_records")
    summed = await conn.fetchval("SELECT sum(requests) FROM monthly_usage_summaries")
    await conn.close()
    assert rows == n and summed == n, (rows, summed, n)


async def filled_topic(s: Stack, dsn: str, n: int) -> tuple[Settings, int]:
    """Settings for ``dsn`` and fresh topics, the usage topic holding ``n`` gateway events."""
    settings = settings_for(s, dsn)
    await ensure_topics(s.bootstrap, topic_specs(settings))
    events = gateway_traffic(n)
    await produce(settings, events)
    total = len(events)
    # A worker process holds no list of 200,000 events: left here, every full garbage
    # collection in the worker would walk them (a third of its time in a profile).
    del events
    gc.collect()
    return settings, total


async def sustained(s: Stack, n: int, max_records: int = 10_000) -> dict[str, Any]:
    """One worker in this process, the topic already full."""
    async with scratch_db(s.dsn) as dsn:
        settings, total = await filled_topic(s, dsn, n)
        tune_for_batches()  # as the ``ledger project`` process does (ProjectorWorker.run)
        runner = ProjectionRunner(make_projection("usage"), settings, dsn=dsn,
                                  bootstrap_servers=s.bootstrap, max_records=max_records)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        # From the assignment (the group join, ~5 s on the embedded broker, is not the
        # projector's speed): timing from the first committed batch instead left that batch
        # out while the next ones were already decoded, and flattered large batches (1.4x
        # for 20,000 against 5,000 where the whole run shows 1.06-1.10x).
        while not runner.positions:
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        while sum(runner.positions.values()) < total:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        await check_totals(dsn, n)
        return {"events": total, "unique": n, "max_records": max_records,
                "events_per_s": round(total / elapsed)}


async def sustained_processes(s: Stack, n: int, workers: int) -> dict[str, Any]:
    """``workers`` ``ledger project`` processes sharing the partitions."""
    async with scratch_db(s.dsn) as dsn:
        settings = settings_for(s, dsn)
        await ensure_topics(s.bootstrap, topic_specs(settings))
        events = gateway_traffic(n)
        await produce(settings, events)
        env = dict(os.environ, **settings.environment())
        conn = await asyncpg.connect(dsn)
        procs = [start_worker(env) for _ in range(workers)]
        try:
            applied_sql = ("SELECT coalesce(sum(next_offset), 0)::bigint "
                           "FROM projection_checkpoints WHERE projection = 'usage'")
            while await conn.fetchval(applied_sql) == 0:
                await asyncio.sleep(0.01)
            started, first = time.perf_counter(), await conn.fetchval(applied_sql)
            memory = [psutil.Process(p.pid) for p in procs]
            rss: list[tuple[int, int]] = []  # (events applied, largest worker RSS in MiB)
            while (done := await conn.fetchval(applied_sql)) < len(events):
                if not rss or done - rss[-1][0] >= len(events) // 10:
                    rss.append((done, max(m.memory_info().rss for m in memory) >> 20))
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            rss.append((done, max(m.memory_info().rss for m in memory) >> 20))
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
            await conn.close()
        await check_totals(dsn, n)
        return {"events": len(events), "workers": workers,
                "events_per_s": round((done - first) / elapsed),
                "worker_rss_mib": {"first": rss[0][1], "last": rss[-1][1],
                                   "max": max(r for _, r in rss), "samples": rss}}


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops", "project", "--projection", "usage",
         "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


async def baseline(s: Stack, n: int) -> dict[str, Any]:
    """One transaction per event: INSERT the record, UPSERT the monthly summary."""
    async with scratch_db(s.dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        base = datetime(2026, 9, 1, tzinfo=UTC)
        await conn.execute("CREATE TABLE usage_records_y2026m09 PARTITION OF usage_records "
                           "FOR VALUES FROM ('2026-09-01') TO ('2026-10-01')")
        key = uuid.uuid4()
        events = [usage(i, key, base + timedelta(seconds=i)) for i in range(n)]
        started = time.perf_counter()
        for e in events:
            async with conn.transaction():
                inserted = await conn.fetchval(
                    "INSERT INTO usage_records (event_id, occurred_at, request_id, api_key_id, "
                    "model, provider, prompt_tokens, completion_tokens, status, cost_usd, "
                    "cost_source, source) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,'emitter',$11) "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    e.event_id, e.occurred_at, e.request_id, e.api_key_id, e.model, e.provider,
                    e.prompt_tokens, e.completion_tokens, e.status, e.cost_usd, e.source)
                if inserted:
                    await conn.execute(
                        "INSERT INTO monthly_usage_summaries AS s (api_key_id, model, month, "
                        "requests, prompt_tokens, completion_tokens, cost_usd, first_occurred_at,"
                        " last_occurred_at) VALUES ($1, $2, '2026-09-01', 1, $3, $4, $5, $6, $6)"
                        " ON CONFLICT (api_key_id, month, model) DO UPDATE SET "
                        "requests = s.requests + 1, prompt_tokens = s.prompt_tokens + $3, "
                        "completion_tokens = s.completion_tokens + $4, cost_usd = s.cost_usd + $5,"
                        " last_occurred_at = greatest(s.last_occurred_at, $6)",
                        e.api_key_id, e.model, e.prompt_tokens, e.completion_tokens, e.cost_usd,
                        e.occurred_at)
        elapsed = time.perf_counter() - started
        await conn.close()
        return {"events": n, "events_per_s": round(n / elapsed)}


async def peer(s: Stack, n: int) -> dict[str, Any]:
    """The eventsourcing library's projection over the same kind of traffic."""
    async with scratch_db(s.dsn) as dsn:
        return await asyncio.to_thread(run_peer, dsn, gateway_traffic(n))


async def lag(s: Stack, rate: int, seconds: float) -> dict[str, Any]:
    """The worker runs in its own process (``ledger project``), as in production."""
    async with scratch_db(s.dsn) as dsn:
        settings = settings_for(s, dsn)
        await ensure_topics(s.bootstrap, topic_specs(settings))
        emitted: dict[str, float] = {}
        seen: dict[str, float] = {}
        listener = await asyncpg.connect(dsn)

        def on_notify(*args: Any) -> None:
            now = time.perf_counter()
            for key_id in decode(args[3]).spend_key_ids:
                seen.setdefault(key_id, now)

        await listener.add_listener(CHANNEL, on_notify)
        worker = start_worker(dict(os.environ, **settings.environment()))
        try:
            async with LedgerProducer.from_settings(settings, linger_ms=2) as producer:
                warm = str(uuid.uuid4())  # wait until the worker is assigned and applying
                emitted[warm] = time.perf_counter()
                await producer.emit_and_wait(usage(0, uuid.UUID(warm), datetime.now(UTC)))
                while warm not in seen:
                    await asyncio.sleep(0.05)
                del emitted[warm]
                total = int(rate * seconds)
                per_tick = max(1, rate // 100)  # emit in 10 ms ticks
                started = time.perf_counter()
                for i in range(0, total, per_tick):
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    for j in range(i, min(i + per_tick, total)):
                        key = uuid.uuid4()
                        emitted[str(key)] = time.perf_counter()
                        await producer.emit(usage(j, key, datetime.now(UTC)))
                offered = total / (time.perf_counter() - started)
                await producer.flush()
            deadline = time.perf_counter() + 60
            while len(seen.keys() & emitted.keys()) < len(emitted) and \
                    time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            await listener.close()
        lags = sorted((seen[k] - t) * 1000 for k, t in emitted.items() if k in seen)
        if not lags:
            raise SystemExit("no event became queryable")
        return {"offered_per_s": round(offered), "events": len(emitted),
                "queryable": len(lags),
                "p50_ms": round(lags[len(lags) // 2], 1),
                "p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 1),
                "max_ms": round(lags[-1], 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--peer", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--within-rate", type=int, default=None,
                        help="also measure the lag at this offered rate, one the worker "
                             "sustains (the lag at --rate says little once it cannot keep up)")
    parser.add_argument("--only", choices=("sustained", "two", "peer"),
                        help="run one phase and print its JSON (for measuring one lever)")
    args = parser.parse_args()
    if args.only is not None:
        async with stack() as s:
            phase = {"sustained": lambda: sustained(s, args.events),
                     "two": lambda: sustained_processes(s, args.events, 2),
                     "peer": lambda: peer(s, args.peer)}[args.only]()
            print(json.dumps(await phase, indent=2))
        return
    async with stack() as s:
        result = {"sustained": await sustained(s, args.events),
                  "sustained_2_processes": await sustained_processes(s, args.events, 2),
                  "baseline": await baseline(s, args.baseline),
                  "peer": await peer(s, args.peer),
                  "lag": await lag(s, args.rate, args.seconds)}
        if args.within_rate is not None:
            result["lag_within_capacity"] = await lag(s, args.within_rate, args.seconds)
    one, two = (result["sustained"]["events_per_s"],
                result["sustained_2_processes"]["events_per_s"])
    naive, lib = result["baseline"]["events_per_s"], result["peer"]["events_per_s"]
    result["ratio"] = round(one / naive, 1)
    result["ratios"] = {"1_worker_vs_baseline": round(one / naive, 1),
                        "2_workers_vs_baseline": round(two / naive, 1),
                        "1_worker_vs_peer": round(one / lib, 1),
                        "2_workers_vs_peer": round(two / lib, 1)}
    print(json.dumps(result, indent=2))
    print("\n| projector (same events, same machine, same run) | events/s | vs naive | vs peer |"
          "\n| --- | ---: | ---: | ---: |")
    for label, rate in (("this projector, 1 worker process", one),
                        ("this projector, 2 worker processes", two),
                        ("naive baseline (1 transaction per event)", naive),
                        ("eventsourcing tracking-record projection (peer)", lib)):
        print(f"| {label} | {rate:,} | {rate / naive:.1f}x | {rate / lib:.1f}x |")
    lag_ = result["lag"]
    print(f"\nemit-to-queryable lag at {lag_['offered_per_s']:,} events/s offered: "
          f"p50 {lag_['p50_ms']} ms, p99 {lag_['p99_ms']} ms")
    if "lag_within_capacity" in result:
        lag_ = result["lag_within_capacity"]
        print(f"emit-to-queryable lag at {lag_['offered_per_s']:,} events/s offered: "
              f"p50 {lag_['p50_ms']} ms, p99 {lag_['p99_ms']} ms")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
