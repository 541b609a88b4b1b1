"""Prices that do not depend on projection timing: live == rebuild, whatever came first.

The usage and catalog projections advance on their own consumer groups, so usage can be
projected before the catalog knows its model, its alias or a price that was valid at its
time. The price of an event must still be a function of the event and the catalog alone:
the live tables, after the catalog catches up, must equal a rebuild of the usage projection
(which replays the usage log against the finished catalog), row for row and to the digit.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.catalog import load_snapshot
from ledger.events import (
    EventBase,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelRetired,
    ModelUpserted,
    UsageRecorded,
)
from ledger.settings import Settings
from ops.catalog_import import CatalogImporter
from projections import make_projection
from projections.base import Envelope, lock_key
from projections.catalog import CatalogProjection
from projections.rebuild import Rebuilder
from projections.reconcile import compare, repair
from projections.usage import UsageProjection
from tests.polling import wait_until
from tests.projections.helpers import emit, running_worker, usage_event, wait_for_rows

JAN, MAR, MAY, JUL = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 3, 5, 7))


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        yield connection
    finally:
        await connection.close()


def _entry(provider: str, input_price: str, output_price: str = "0.00001") -> dict[str, Any]:
    return {"litellm_provider": provider, "mode": "chat",
            "input_cost_per_token": input_price, "output_cost_per_token": output_price}


def _upsert(name: str, raw: dict[str, Any], valid_from: datetime) -> ModelUpserted:
    return ModelUpserted(event_id=uuid.uuid4(), occurred_at=valid_from, source="test",
                         name=name, raw=raw, valid_from=valid_from)


def _alias(alias: str, model: str | None) -> EventBase:
    envelope: dict[str, Any] = {"event_id": uuid.uuid4(), "occurred_at": JAN, "source": "test"}
    if model is None:
        return ModelAliasRemoved(**envelope, alias=alias)
    return ModelAliasSet(**envelope, alias=alias, model=model)


# The catalog's log, in order: every kind of change that moves a price or a name.
CATALOG_LOG: list[EventBase] = [
    _upsert("gpt-4o", _entry("openai", "0.0000025"), JAN),
    _upsert("azure_ai/gpt-6-astra", _entry("azure_ai", "0.000003"), JAN),
    _upsert("azure_ai/gpt-astra-latest", {"alias_of": "azure_ai/gpt-6-astra"}, JAN),
    _alias("azure_ai/gpt-astra-latest", "azure_ai/gpt-6-astra"),
    _alias("my-4o", "gpt-4o"),  # an operator's alias
    _alias("4o", "gpt-4o"),  # stays: reaches gpt-4o through its provider, which changes
    _upsert("gpt-4o", _entry("openai", "0.000005"), MAY),  # a price valid from May
    _upsert("GPT-4O", _entry("openai", "0.000007"), JUL),  # an exact spelling appears
    _alias("my-4o", "azure_ai/gpt-6-astra"),  # re-pointed
    _alias("azure_ai/gpt-astra-latest", None),  # removed: the name is a dangling entry now
    _upsert("gpt-4o", _entry("azure", "0.000005"), MAY),  # same valid_from: history keeps v2
    _upsert("late-model", _entry("acme", "0.000001"), JAN),
    ModelRetired(event_id=uuid.uuid4(), occurred_at=JUL, source="test", name="late-model"),
]
NAMES = ["gpt-4o", "GPT-4o", "GPT-4O", "openai/gpt-4o", "azure/gpt-4o", "my-4o", "openai/my-4o",
         "openai/4o", "azure/4o", "azure_ai/gpt-astra-latest", "azure_ai/gpt-6-astra",
         "late-model", "no-such-model"]


def _usage(rng: random.Random, n: int) -> list[UsageRecorded]:
    keys = [uuid.uuid4() for _ in range(3)]
    events = []
    for _ in range(n):
        when = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(200 * 86400))
        cost = Decimal(rng.randrange(1, 999)) / 10**6 if rng.random() < 0.15 else None
        events.append(usage_event(rng.choice(keys), model=rng.choice(NAMES), when=when, cost=cost,
                                  prompt=rng.randrange(0, 3000), completion=rng.randrange(0, 500)))
    return events


async def _apply(conn: asyncpg.Connection, projection: Any, events: Sequence[EventBase]) -> None:
    """As a worker's batch: prepare outside, then one transaction under the shared lock."""
    envelopes = [Envelope(projection.name, 0, n, None, e) for n, e in enumerate(events)]
    await projection.prepare(conn, envelopes)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                           lock_key(projection.name))
        result = await projection.apply(conn, envelopes)
    assert not result.failures, result.failures


async def _usage_state(conn: asyncpg.Connection) -> tuple[Any, Any]:
    records = await conn.fetch(
        "SELECT event_id, model, cost_usd, cost_source FROM usage_records ORDER BY event_id")
    summaries = await conn.fetch(
        "SELECT * FROM monthly_usage_summaries ORDER BY api_key_id, month, model")
    return ([tuple(r.values()) for r in records],
            [tuple(v for k, v in r.items() if k != "updated_at") for r in summaries])


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_any_interleaving_of_catalog_and_usage_prices_like_a_rebuild(
    conn: asyncpg.Connection, seed: int
) -> None:
    rng = random.Random(seed)
    usage = _usage(rng, 400)
    usage_batches = [usage[i:i + 40] for i in range(0, len(usage), 40)]
    catalog_batches: list[list[EventBase]] = []
    log = list(CATALOG_LOG)
    while log:
        size = rng.randint(1, 3)
        catalog_batches.append(log[:size])
        log = log[size:]
    # Live: the two logs interleaved at random, each in its own order.
    order = ["usage"] * len(usage_batches) + ["catalog"] * len(catalog_batches)
    rng.shuffle(order)
    usage_projection, catalog_projection = UsageProjection(), CatalogProjection()
    pending_usage, pending_catalog = iter(usage_batches), iter(catalog_batches)
    for which in order:
        if which == "usage":
            await _apply(conn, usage_projection, next(pending_usage))
        else:
            await _apply(conn, catalog_projection, next(pending_catalog))
    live = await _usage_state(conn)
    assert await compare(conn) == []
    assert any(source == "catalog" for _, _, _, source in live[0])

    # Rebuild: the usage log replayed against the finished catalog.
    await conn.execute(
        "TRUNCATE usage_event_ids, usage_records, monthly_usage_summaries")
    fresh = UsageProjection()
    for batch in usage_batches:
        await _apply(conn, fresh, batch)
    assert await _usage_state(conn) == live


async def test_a_catalog_batch_waits_for_a_usage_batch_in_flight_and_reprices_it(
    pg_dsn: str, conn: asyncpg.Connection
) -> None:
    """The race: usage priced against the catalog before a change that commits first."""
    key = uuid.uuid4()
    in_flight = [usage_event(key, model="gpt-4o", when=MAR, cost=None, prompt=1000,
                             completion=500)]
    batch, catalog = await asyncpg.connect(pg_dsn), await asyncpg.connect(pg_dsn)
    try:
        projection = UsageProjection()
        envelopes = [Envelope("usage", 0, 0, None, e) for e in in_flight]
        await projection.prepare(batch, envelopes)
        transaction = batch.transaction()
        await transaction.start()
        await batch.execute("SELECT pg_advisory_xact_lock_shared(hashtext($1))",
                            lock_key("usage"))
        await projection.apply(batch, envelopes)  # priced against an empty catalog: unpriced
        importing = asyncio.create_task(
            _apply(catalog, CatalogProjection(), [CATALOG_LOG[0]]))
        pid = catalog.get_server_pid()

        async def catalog_is_waiting() -> bool:
            return bool(await conn.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))

        await wait_until(catalog_is_waiting, 30, "the catalog batch to wait for the usage batch")
        await transaction.commit()
        await asyncio.wait_for(importing, 30)
    finally:
        await batch.close()
        await catalog.close()
    row = await conn.fetchrow("SELECT cost_usd, cost_source FROM usage_records")
    assert row is not None
    assert (row["cost_usd"], row["cost_source"]) == (Decimal("0.0075"), "catalog")
    assert await compare(conn) == []


async def test_a_catalog_batch_waits_for_a_usage_rebuild_to_swap_in(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    """A rebuild prices against the catalog while it replays; a change must not slip between."""
    key = uuid.uuid4()
    await emit(settings, [usage_event(key, model="gpt-4o", when=MAR, cost=None, prompt=1000,
                                      completion=500)])
    replaying, resume = asyncio.Event(), asyncio.Event()

    class PausedUsage(UsageProjection):
        async def apply(self, conn: asyncpg.Connection, batch: list[Envelope]) -> Any:
            if not replaying.is_set():  # the first replayed batch, priced with no catalog
                result = await super().apply(conn, batch)
                replaying.set()
                await resume.wait()
                return result
            return await super().apply(conn, batch)

    assert settings.database_url and settings.kafka_bootstrap_servers
    rebuilding = asyncio.create_task(Rebuilder(
        PausedUsage(), settings, dsn=settings.database_url,
        bootstrap_servers=settings.kafka_bootstrap_servers).run())
    catalog = await asyncpg.connect(settings.database_url)
    try:
        await asyncio.wait_for(replaying.wait(), 60)
        importing = asyncio.create_task(_apply(catalog, CatalogProjection(), [CATALOG_LOG[0]]))
        pid = catalog.get_server_pid()

        async def catalog_is_waiting() -> bool:
            return bool(await conn.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))

        await wait_until(catalog_is_waiting, 30, "the catalog batch to wait for the rebuild")
        resume.set()
        await asyncio.wait_for(rebuilding, 60)
        await asyncio.wait_for(importing, 30)
    finally:
        resume.set()
        await catalog.close()
    row = await conn.fetchrow("SELECT cost_usd, cost_source FROM usage_records")
    assert row is not None
    assert (row["cost_usd"], row["cost_source"]) == (Decimal("0.0075"), "catalog")
    assert await compare(conn) == []


async def test_a_missing_summary_is_left_to_the_repair(
    conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4()
    events = [usage_event(key, model="gpt-4o", when=MAR, cost=None, prompt=1000,
                          completion=500)]
    await _apply(conn, UsageProjection(), events)
    await conn.execute("DELETE FROM monthly_usage_summaries")  # damage, as by hand
    await _apply(conn, CatalogProjection(), [CATALOG_LOG[0]])
    assert await conn.fetchval("SELECT cost_usd FROM usage_records") == Decimal("0.0075")
    assert "1 of 1 monthly summaries to adjust are missing" in caplog.text
    assert [d.column for d in await compare(conn)] == ["row"]
    await repair(conn)
    assert await compare(conn) == []
    assert await conn.fetchval("SELECT cost_usd FROM monthly_usage_summaries") == Decimal(
        "0.0075")


async def test_catalog_imported_after_the_usage_live_equals_rebuild(settings: Settings) -> None:
    """End to end: real broker, real workers, the real importer and Rebuilder."""
    snapshot = load_snapshot()
    gpt4o = snapshot["gpt-4o"]
    v1 = {"gpt-4o": gpt4o, "azure_ai/gpt-6-astra": snapshot["azure_ai/gpt-6-astra"],
          "azure_ai/gpt-astra-latest": snapshot["azure_ai/gpt-astra-latest"]}
    v2 = {**v1, "gpt-4o": {**gpt4o, "input_cost_per_token": Decimal("0.000005")}}
    key = uuid.uuid4()
    apr, jun = datetime(2026, 4, 10, tzinfo=UTC), datetime(2026, 6, 10, tzinfo=UTC)
    usage = [
        usage_event(key, model=model, when=when, cost=None, prompt=1000, completion=500)
        for model in ("gpt-4o", "OpenAI/GPT-4o", "azure_ai/gpt-astra-latest", "my-4o",
                      "no-such-model")
        for when in (apr, jun)
    ] + [usage_event(key, model="gpt-4o", when=apr, cost=Decimal("0.5"))]
    assert settings.database_url and settings.kafka_bootstrap_servers
    dsn = settings.database_url
    importer = CatalogImporter(settings, show_progress=False)
    async with running_worker(settings, ("catalog", "usage")) as worker:
        await emit(settings, usage)
        await wait_for_rows(dsn, "SELECT count(*) FROM usage_records", len(usage))
        assert await _count(dsn, "cost_source = 'unpriced'") == len(usage) - 1  # no catalog yet
        # The catalog arrives afterwards, with prices valid before the usage happened.
        summary = await importer.run(v1, valid_from=JAN)
        await importer.wait_until_projected(summary, timeout_s=60)
        summary = await importer.run(v2, valid_from=MAY)  # a price change backdated to May
        await importer.wait_until_projected(summary, timeout_s=60)
        await emit(settings, [_alias("my-4o", "gpt-4o")])
        await wait_for_rows(dsn, "SELECT count(*) FROM model_aliases", 2)

        async def counted() -> bool:  # counted after the commit, so maybe a moment later
            return worker.metrics.registry.get_sample_value(
                "ledger_projector_repriced_total", {"projection": "catalog"}) == 10

        await wait_until(counted, 10, "ledger_projector_repriced_total == 10")

    old = 1000 * Decimal("0.0000025") + 500 * Decimal("0.00001")  # 0.0075
    new = 1000 * Decimal("0.000005") + 500 * Decimal("0.00001")  # 0.0100
    astra = 1000 * snapshot["azure_ai/gpt-6-astra"]["input_cost_per_token"] + \
        500 * snapshot["azure_ai/gpt-6-astra"]["output_cost_per_token"]
    expected = {("gpt-4o", apr): old, ("gpt-4o", jun): new, ("OpenAI/GPT-4o", apr): old,
                ("OpenAI/GPT-4o", jun): new, ("azure_ai/gpt-astra-latest", apr): astra,
                ("azure_ai/gpt-astra-latest", jun): astra, ("my-4o", apr): old,
                ("my-4o", jun): new, ("no-such-model", apr): None, ("no-such-model", jun): None}
    conn = await asyncpg.connect(dsn)
    try:
        live = await _usage_state(conn)
        costs = {(r["model"], r["occurred_at"]): r["cost_usd"] for r in await conn.fetch(
            "SELECT model, occurred_at, cost_usd FROM usage_records WHERE cost_source <> "
            "'emitter'")}
        assert costs == expected
        assert await compare(conn) == []
        repriced = await conn.fetchval("SELECT count(*) FROM usage_repricings")
        assert repriced == 10  # 8 priced at last, 2 of them (June) priced twice
    finally:
        await conn.close()
    status = await asyncio.to_thread(_ledger, settings, "status")
    assert status.returncode == 0, status.stderr
    net = sum(cost for cost in expected.values() if cost is not None)  # each started unpriced
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("pricing:"))
    assert line.startswith(f"pricing: 2 usage events unpriced; 10 re-priced after catalog "
                           f"changes (net +{net} USD, last "), line

    await Rebuilder(make_projection("usage"), settings, dsn=dsn,
                    bootstrap_servers=settings.kafka_bootstrap_servers).run()
    conn = await asyncpg.connect(dsn)
    try:
        assert await _usage_state(conn) == live
        assert await compare(conn) == []
    finally:
        await conn.close()


def _ledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.environment(), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ops", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)


async def _count(dsn: str, where: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM usage_records WHERE {where}"))
    finally:
        await conn.close()
