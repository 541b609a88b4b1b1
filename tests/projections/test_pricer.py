"""CatalogPricer: the price valid at occurred_at, reached by name, alias or provider prefix."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from projections.pricer import CatalogPricer
from tests.projections.helpers import usage_event

JUNE, SEPT = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)


async def test_price_by_time_and_by_name_alias_or_prefix(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        for valid_from, price in ((JUNE, "0.000002"), (SEPT, "0.000003")):
            raw = {"litellm_provider": "openai", "mode": "chat",
                   "input_cost_per_token": float(price), "output_cost_per_token": 0.00001}
            await conn.execute(
                "INSERT INTO model_price_history (model, valid_from, raw) VALUES ($1, $2, $3)",
                "gpt-4o", valid_from, json.dumps(raw))
        await conn.execute(
            "INSERT INTO models (name, provider, raw, valid_from) VALUES ('gpt-4o', 'openai', "
            "'{}', $1)", JUNE)
        await conn.execute("INSERT INTO model_aliases (alias, model) VALUES ('4o', 'gpt-4o')")
        key = uuid.uuid4()
        july, october = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC)
        events = [
            usage_event(key, model="gpt-4o", when=july, cost=None, prompt=1000, completion=100),
            usage_event(key, model="gpt-4o", when=october, cost=None, prompt=1000, completion=100),
            usage_event(key, model="4o", when=october, cost=None, prompt=1000, completion=100),
            usage_event(key, model="openai/gpt-4o", when=july, cost=None, prompt=1000,
                        completion=100),
            usage_event(key, model="anthropic/gpt-4o", when=july, cost=None),  # wrong provider
            usage_event(key, model="gpt-4o", when=datetime(2026, 1, 1, tzinfo=UTC), cost=None),
            usage_event(key, model="gpt-4o", when=july, cost=Decimal("0.5")),
        ]
        costs = await CatalogPricer().costs(conn, events)
    finally:
        await conn.close()
    july_cost = Decimal("1000") * Decimal("0.000002") + Decimal("100") * Decimal("0.00001")
    october_cost = Decimal("1000") * Decimal("0.000003") + Decimal("100") * Decimal("0.00001")
    assert costs == [
        (july_cost, "catalog"),
        (october_cost, "catalog"),
        (october_cost, "catalog"),
        (july_cost, "catalog"),
        (None, "unpriced"),
        (None, "unpriced"),  # before any price was valid
        (Decimal("0.5"), "emitter"),
    ]
