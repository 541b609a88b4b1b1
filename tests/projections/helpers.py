"""Shared pieces of the projector tests: emit with plain aiokafka, run workers, ground truth."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from ledger.catalog import snapshot_path
from ledger.codec import dump_event
from ledger.events import EventBase, UsageRecorded
from ledger.routing import Topics, partition_key, topic_for
from ledger.settings import Settings
from projections import ProjectorWorker
from projections.base import Envelope, lock_key
from projections.usage import UsageProjection
from tests.polling import wait_until


def topics_of(settings: Settings) -> Topics:
    return Topics.from_settings(settings)


async def send_raw(
    bootstrap: str, items: Iterable[tuple[str, bytes | None, bytes]]
) -> None:
    """Send (topic, key, value) messages as any producer in any language would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def emit(settings: Settings, events: Iterable[EventBase]) -> None:
    assert settings.kafka_bootstrap_servers is not None
    topics = topics_of(settings)
    await send_raw(settings.kafka_bootstrap_servers,
                   [(topic_for(e, topics), partition_key(e), dump_event(e)) for e in events])


def usage_event(
    key_id: uuid.UUID, *, model: str = "gpt-4o", when: datetime | None = None,
    cost: Decimal | None = Decimal("0.0010"), prompt: int = 100, completion: int = 20,
    status: str = "success",
) -> UsageRecorded:
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=when or datetime.now(UTC), source="test",
        request_id=f"req-{uuid.uuid4().hex[:8]}", api_key_id=key_id, model=model,
        provider="openai", prompt_tokens=prompt, completion_tokens=completion,
        status=status, cost_usd=cost)  # type: ignore[arg-type]


def random_usage(rng: random.Random, keys: list[uuid.UUID], n: int) -> list[UsageRecorded]:
    base = datetime(2026, 9, 1, tzinfo=UTC)
    return [
        usage_event(
            rng.choice(keys), model=rng.choice(["gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini"]),
            when=base + timedelta(seconds=rng.randrange(90 * 86400)),
            cost=Decimal(rng.randrange(1, 10**6)) / Decimal(10**9),
            prompt=rng.randrange(0, 5000), completion=rng.randrange(0, 800),
            status="error" if rng.random() < 0.05 else "success",
        )
        for _ in range(n)
    ]


@dataclass(frozen=True)
class Totals:
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


def ground_truth(events: Iterable[UsageRecorded]) -> dict[tuple[str, str, str], Totals]:
    """What monthly_usage_summaries must hold: each distinct event counted once."""
    unique = {e.event_id: e for e in events}
    acc: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0)])
    for e in unique.values():
        month = e.occurred_at.astimezone(UTC).strftime("%Y-%m-01")
        row = acc[(str(e.api_key_id), e.model, month)]
        row[0] += 1
        row[1] += e.status == "error"
        row[2] += e.prompt_tokens
        row[3] += e.completion_tokens
        row[4] += e.cost_usd or 0
    return {k: Totals(*v) for k, v in acc.items()}


async def summaries(dsn: str) -> dict[tuple[str, str, str], Totals]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT api_key_id::text AS k, model, month::text AS m, requests, errors, "
            "prompt_tokens, completion_tokens, cost_usd FROM monthly_usage_summaries")
    finally:
        await conn.close()
    return {(r["k"], r["model"], r["m"]): Totals(r["requests"], r["errors"], r["prompt_tokens"],
                                                 r["completion_tokens"], r["cost_usd"])
            for r in rows}


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def wait_for_rows(dsn: str, sql: str, expected: int, timeout: float = 30.0) -> None:
    async def done() -> bool:
        return bool(await fetchval(dsn, sql) == expected)

    await wait_until(done, timeout, f"{sql} == {expected}")


def start_worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`ledger project --projection usage` in its own process, as an operator starts it."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ops", "project", "--projection", "usage"],
            env=dict(os.environ, **settings.environment()), stdout=out, stderr=out,
            stdin=subprocess.DEVNULL)


@asynccontextmanager
async def running_worker(
    settings: Settings, projections: tuple[str, ...] = ("usage", "keys", "catalog")
) -> AsyncIterator[ProjectorWorker]:
    assert settings.database_url and settings.kafka_bootstrap_servers
    worker = ProjectorWorker(settings, dsn=settings.database_url,
                             bootstrap_servers=settings.kafka_bootstrap_servers,
                             projections=projections)
    task = asyncio.create_task(_run_without_signals(worker))
    try:
        yield worker
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, 60)


async def _run_without_signals(worker: ProjectorWorker) -> None:
    tasks = [asyncio.create_task(r.run(worker.stop)) for r in worker.runners]
    tasks += [asyncio.create_task(r.run(worker.stop)) for r in worker.relays]
    await asyncio.gather(*tasks)


async def project_usage(conn: asyncpg.Connection, events: list[UsageRecorded]) -> None:
    """Apply events with the usage projection's own code, as a worker's batch would."""
    projection = UsageProjection()
    envelopes = [Envelope("usage", 0, n, None, e) for n, e in enumerate(events)]
    await projection.prepare(conn, envelopes)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))", lock_key("usage"))
        await projection.apply(conn, envelopes)


async def insert_snapshot_models(conn: asyncpg.Connection, names: Iterable[str],
                                 valid_from: datetime) -> None:
    """Catalog entries of the packaged snapshot as the catalog projection writes them: the
    model row (names resolve through it) and its price history."""
    snapshot = json.loads(snapshot_path().read_bytes())
    for name in names:
        await conn.execute(
            "INSERT INTO models (name, provider, raw, valid_from) VALUES ($1, $2, $3, $4)",
            name, snapshot[name].get("litellm_provider"), json.dumps(snapshot[name]), valid_from)
        await conn.execute(
            "INSERT INTO model_price_history (model, valid_from, raw) VALUES ($1, $2, $3)",
            name, valid_from, json.dumps(snapshot[name]))  # fmt: skip
