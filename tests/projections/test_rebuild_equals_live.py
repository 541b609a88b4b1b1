"""Rebuild equals live, for every projection: one test case, a subclass per projection.

The live worker projects a log; then the Rebuilder replays the same log into fresh tables and
swaps them in. Every table the projection owns (``Projection.tables()``) must then hold the
same rows as before, column for column, except the columns the database stamps with the wall
clock at write time (``now()``), which a replay cannot reproduce and readers do not price by.

A projection is covered by subclassing :class:`RebuildEqualsLive` with its log; the test at
the bottom fails if a registered projection has no subclass.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import asyncpg

from ledger.catalog import load_snapshot
from ledger.events import (
    EventBase,
    ModelAliasRemoved,
    ModelAliasSet,
    ModelRetired,
    ModelUpserted,
    ProviderRemoved,
    ProviderUpserted,
)
from ledger.producer import EventBuilder
from ledger.settings import Settings
from projections import make_projection
from projections.rebuild import Rebuilder
from projections.registry import PROJECTION_NAMES
from tests.projections.helpers import emit, random_usage, running_worker, wait_for_rows

PROJECTED = "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints"


async def _snapshot(dsn: str, tables: tuple[str, ...],
                    wall_clock: frozenset[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, without wall-clock columns, in a stable order."""
    conn = await asyncpg.connect(dsn)
    try:
        snapshot = {}
        for table in tables:
            columns = [c for c in await conn.fetchval(
                "SELECT array_agg(column_name::text ORDER BY ordinal_position) "
                "FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = $1", table) if f"{table}.{c}" not in wall_clock]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = await conn.fetch(f"SELECT {listed} FROM {table} ORDER BY {listed}")
            snapshot[table] = [tuple(r.values()) for r in rows]
        return snapshot
    finally:
        await conn.close()


async def _oids(dsn: str, tables: tuple[str, ...]) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval("SELECT $1::regclass::oid", f"public.{table}")
                for table in tables]
    finally:
        await conn.close()


class RebuildEqualsLive:
    """The shared case; subclasses name the projection and the log to project."""

    projection: ClassVar[str]
    # "table.column" set to now() by the projection's SQL: differs between any two runs.
    wall_clock_columns: ClassVar[frozenset[str]] = frozenset()

    def log(self) -> list[EventBase]:
        raise NotImplementedError

    async def test_rebuild_equals_live(self, settings: Settings) -> None:
        assert settings.database_url and settings.kafka_bootstrap_servers
        events = self.log()
        await emit(settings, events)
        tables = make_projection(self.projection).tables()
        async with running_worker(settings, (self.projection,)):
            await wait_for_rows(settings.database_url, PROJECTED, len(events))
            live = await _snapshot(settings.database_url, tables, self.wall_clock_columns)
            empty = [table for table, rows in live.items() if not rows]
            assert not empty, f"the log leaves {empty} empty: the case would prove nothing there"
            live_oids = await _oids(settings.database_url, tables)
            applied = await Rebuilder(make_projection(self.projection), settings,
                                      dsn=settings.database_url,
                                      bootstrap_servers=settings.kafka_bootstrap_servers).run()
        assert applied == len({e.event_id for e in events})  # the whole log, duplicates once...
        rebuilt_oids = await _oids(settings.database_url, tables)
        assert not set(rebuilt_oids) & set(live_oids)  # ...into new tables, swapped in
        assert await _snapshot(settings.database_url, tables, self.wall_clock_columns) == live


class TestUsage(RebuildEqualsLive):
    projection = "usage"
    wall_clock_columns = frozenset({"usage_records.projected_at",
                                    "monthly_usage_summaries.updated_at"})

    def log(self) -> list[EventBase]:
        rng = random.Random(5)
        events = random_usage(rng, [uuid.uuid4() for _ in range(5)], 600)
        return [*events, *events[:50]]  # with duplicates, which both must drop


class TestKeys(RebuildEqualsLive):
    projection = "keys"

    def log(self) -> list[EventBase]:
        build = EventBuilder("test")
        ids = [uuid.uuid4() for _ in range(20)]
        events: list[EventBase] = [
            build.create_key(api_key_id=i, name=f"k{n}", plaintext_key=f"sk-{i}",
                             metadata={"n": str(n)}) for n, i in enumerate(ids)]
        events += [build.revoke_key(api_key_id=i) for i in ids[:5]]
        events += [build.update_key(api_key_id=i, owner="ops") for i in ids[5:10]]
        return events


class TestCatalog(RebuildEqualsLive):
    projection = "catalog"
    wall_clock_columns = frozenset({"providers.updated_at", "models.updated_at",
                                    "model_aliases.updated_at"})

    def log(self) -> list[EventBase]:
        snapshot = load_snapshot()
        jan, may = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)

        def envelope(when: datetime = jan) -> dict[str, Any]:
            return {"event_id": uuid.uuid4(), "occurred_at": when, "source": "test"}

        names = ["gpt-4o", "gpt-4o-mini", "azure_ai/gpt-6-astra",
                 "anthropic.claude-3-5-sonnet-20241022-v2:0"]
        events: list[EventBase] = [
            ModelUpserted(**envelope(), name=name, raw=snapshot[name], valid_from=jan)
            for name in names]
        events += [
            ModelUpserted(**envelope(may), name="gpt-4o", valid_from=may,  # a price change
                          raw={**snapshot["gpt-4o"], "input_cost_per_token": Decimal("0.000005")}),
            ModelAliasSet(**envelope(), alias="my-4o", model="gpt-4o"),
            ModelAliasSet(**envelope(), alias="fast", model="gpt-4o-mini"),
            ModelAliasSet(**envelope(), alias="my-4o", model="azure_ai/gpt-6-astra"),
            ModelAliasRemoved(**envelope(), alias="fast"),
            ModelRetired(**envelope(may), name="gpt-4o-mini"),
            ProviderUpserted(**envelope(), name="acme", base_url="https://acme.example",
                             features=["chat"]),
            ProviderUpserted(**envelope(), name="gone"),
            ProviderRemoved(**envelope(), name="gone"),
        ]
        return events


def test_every_projection_has_a_rebuild_equals_live_case() -> None:
    covered = {case.projection for case in RebuildEqualsLive.__subclasses__()}
    assert covered == set(PROJECTION_NAMES)
