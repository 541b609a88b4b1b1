"""Fixtures for the read-model tests: a ReadModels on the test's database and a writer that
changes rows the way a projector does (SQL plus NOTIFY in the same transaction)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.invalidation import CHANNEL, Invalidation, encode
from ledger.keys import generate_key, hash_key
from ledger.settings import Settings
from readmodels import ReadModels
from tests.polling import wait_until


def make_settings(dsn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn, "db_max_open_conns": 4, "db_max_idle_conns": 1,
    }
    values.update(overrides)
    return Settings(**values)


class Writer:
    """Writes rows as the projector would and notifies in the same transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.partitions: set[date] = set()
        self.sent = 0  # notifications sent (committed transactions only are delivered)

    async def _notify(self, change: Invalidation) -> None:
        for payload in encode(change):
            await self.conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
            self.sent += 1

    async def settled(self, rm: ReadModels) -> None:
        """Wait until ``rm`` has received every notification this writer sent."""

        async def received() -> bool:
            return rm.stats().notifications >= self.sent

        await wait_until(received, 1.0, "every notification sent", interval=0.005)

    async def add_key(
        self, plaintext: str | None = None, *, owner: str | None = None, enabled: bool = True,
        expires_at: datetime | None = None, allowed_models: Iterable[str] = (),
        max_budget_usd: Decimal | None = None, metadata: dict[str, str] | None = None,
        revoked_at: datetime | None = None, name: str = "test key", notify: bool = True,
    ) -> tuple[str, uuid.UUID, str]:
        plaintext = plaintext or generate_key()
        key_id, key_hash = uuid.uuid4(), hash_key(plaintext)
        now = datetime.now(UTC)
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO api_keys (id, key_hash, name, owner, enabled, expires_at,
                   allowed_models, max_budget_usd, created_at, updated_at, revoked_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)""",
                key_id, key_hash, name, owner, enabled, expires_at, list(allowed_models),
                max_budget_usd, now, revoked_at,
            )
            for k, v in (metadata or {}).items():
                await self.conn.execute(
                    "INSERT INTO key_metadata (api_key_id, key, value) VALUES ($1, $2, $3)",
                    key_id, k, v,
                )
            if notify:
                await self._notify(Invalidation(key_hashes=frozenset({key_hash}),
                                                key_ids=frozenset({str(key_id)})))
        return plaintext, key_id, key_hash

    async def update_key(self, key_id: uuid.UUID, *, by: str = "both", **columns: Any) -> None:
        """Change columns; notify by hash, by id, or both (``by``)."""
        sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(columns, start=2))
        async with self.conn.transaction():
            key_hash = await self.conn.fetchval(
                f"UPDATE api_keys SET {sets}, updated_at = now() WHERE id = $1 "
                "RETURNING key_hash", key_id, *columns.values(),
            )
            hashes = frozenset({key_hash}) if by in ("both", "hash") else frozenset()
            ids = frozenset({str(key_id)}) if by in ("both", "id") else frozenset()
            await self._notify(Invalidation(key_hashes=hashes, key_ids=ids))

    async def revoke(self, key_id: uuid.UUID, *, by: str = "both") -> None:
        await self.update_key(key_id, by=by, revoked_at=datetime.now(UTC))

    async def add_provider(self, name: str, **config: Any) -> None:
        await self.conn.execute(
            "INSERT INTO providers (name, base_url, config) VALUES ($1, $2, $3::jsonb)",
            name, f"https://{name}.example", json.dumps(config),
        )

    async def add_model(self, name: str, provider: str | None, *,
                        input_cost: str = "0.000001", notify: bool = True) -> None:
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO models (name, provider, mode, input_cost_per_token,
                   output_cost_per_token, supports_vision, raw, valid_from)
                   VALUES ($1, $2, 'chat', $3, $3, true, '{}'::jsonb, now())
                   ON CONFLICT (name) DO UPDATE SET provider = EXCLUDED.provider,
                   input_cost_per_token = EXCLUDED.input_cost_per_token""",
                name, provider, Decimal(input_cost),
            )
            if notify:
                await self._notify(Invalidation(models=frozenset({name})))

    async def set_alias(self, alias: str, model: str) -> None:
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO model_aliases (alias, model) VALUES ($1, $2)
                   ON CONFLICT (alias) DO UPDATE SET model = EXCLUDED.model""", alias, model,
            )
            await self._notify(Invalidation(models=frozenset({alias})))

    async def add_spend(self, key_id: uuid.UUID, model: str, month: date, cost: Decimal) -> None:
        now = datetime.now(UTC)
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO monthly_usage_summaries (api_key_id, model, month, requests,
                   cost_usd, first_occurred_at, last_occurred_at)
                   VALUES ($1, $2, $3, 1, $4, $5, $5)
                   ON CONFLICT (api_key_id, month, model) DO UPDATE SET
                   requests = monthly_usage_summaries.requests + 1,
                   cost_usd = monthly_usage_summaries.cost_usd + EXCLUDED.cost_usd""",
                key_id, model, month, cost, now,
            )
            await self._notify(Invalidation(spend_key_ids=frozenset({str(key_id)})))

    async def ensure_partition(self, moment: datetime) -> None:
        first = date(moment.year, moment.month, 1)
        if first in self.partitions:
            return
        following = (first + timedelta(days=32)).replace(day=1)
        await self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS usage_records_{first:%Y%m} PARTITION OF usage_records "
            f"FOR VALUES FROM ('{first.isoformat()}') TO ('{following.isoformat()}')"
        )
        self.partitions.add(first)

    async def add_usage(self, key_id: uuid.UUID, model: str, occurred_at: datetime, *,
                        prompt: int = 10, completion: int = 5, cost: Decimal | None = None,
                        status: str = "success", event_id: uuid.UUID | None = None,
                        images: int = 0, output_images: int = 0) -> uuid.UUID:
        await self.ensure_partition(occurred_at)
        event_id = event_id or uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO usage_records (event_id, occurred_at, request_id, api_key_id, model,
               provider, prompt_tokens, completion_tokens, status, cost_usd, cost_source,
               source, metadata, images, output_images)
               VALUES ($1, $2, $3, $4, $5, 'openai', $6, $7, $8, $9, $10, 'test',
               '{"team": "a"}'::jsonb, $11, $12)""",
            event_id, occurred_at, f"req-{event_id.hex[:8]}", key_id, model, prompt,
            completion, status, cost, "unpriced" if cost is None else "emitter", images,
            output_images,
        )
        return event_id

    async def summarize(self) -> None:
        """Rebuild monthly_usage_summaries from usage_records, as the projector keeps them."""
        await self.conn.execute("DELETE FROM monthly_usage_summaries")
        await self.conn.execute(
            """INSERT INTO monthly_usage_summaries (api_key_id, model, month, requests, errors,
               unpriced_requests, prompt_tokens, completion_tokens, images, output_images,
               cost_usd, first_occurred_at, last_occurred_at)
               SELECT api_key_id, model, date_trunc('month', occurred_at, 'UTC')::date,
                      count(*), count(*) FILTER (WHERE status = 'error'),
                      count(*) FILTER (WHERE cost_source = 'unpriced'), sum(prompt_tokens),
                      sum(completion_tokens), sum(images), sum(output_images),
                      COALESCE(sum(cost_usd), 0), min(occurred_at), max(occurred_at)
               FROM usage_records GROUP BY 1, 2, 3"""
        )


@pytest.fixture
async def writer(pg_dsn: str) -> AsyncIterator[Writer]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield Writer(conn)
    finally:
        await conn.close()


@pytest.fixture
async def rm(pg_dsn: str) -> AsyncIterator[ReadModels]:
    async with ReadModels.open(make_settings(pg_dsn)) as opened:
        yield opened
