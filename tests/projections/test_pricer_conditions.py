"""Usage events priced and stored with how and when they were served: off-peak windows at
occurred_at, service tiers and regional uplifts (docs/pricing.md, rules 10-12)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from ledger.codec import parse_event
from ledger.events import UsageRecorded
from ledger.settings import Settings
from projections.pricer import CatalogPricer
from projections.usage import fingerprint
from tests.projections.helpers import (
    emit,
    insert_snapshot_models,
    running_worker,
    wait_for_rows,
)

JUNE = datetime(2026, 6, 1, tzinfo=UTC)
PEAK = datetime(2026, 9, 2, 8, tzinfo=UTC)  # a Wednesday, 08:00 UTC
OFF_PEAK = datetime(2026, 9, 2, 4, 30, tzinfo=UTC)
MODELS = ("deepseek/deepseek-flash", "gpt-5.4")


def event(model: str, when: datetime, key: uuid.UUID | None = None, **served: Any) -> UsageRecorded:
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=when, source="test", request_id="r",
        api_key_id=key or uuid.uuid4(), model=model, prompt_tokens=10_000,
        cache_read_input_tokens=4000, completion_tokens=1000, status="success", **served,
    )  # fmt: skip


async def test_catalog_price_follows_occurred_at_tier_and_region(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await insert_snapshot_models(conn, MODELS, JUNE)
        costs = await CatalogPricer().costs(conn, [
            event("deepseek/deepseek-flash", PEAK),
            event("deepseek/deepseek-flash", OFF_PEAK),
            event("gpt-5.4", PEAK),
            event("gpt-5.4", PEAK, service_tier="flex"),
            event("gpt-5.4", PEAK, service_tier="batch"),
            event("gpt-5.4", PEAK, service_tier="priority", data_residency="eu"),
        ])  # fmt: skip
    finally:
        await conn.close()
    # deepseek-flash: 6000 x 3e-7 + 4000 x 6e-9 + 1000 x 1.2e-6, off-peak all halved.
    # gpt-5.4 (input, cache read, output): standard 2.5e-6, 2.5e-7, 1.5e-5; flex 1.25e-6,
    # 1.3e-7, 7.5e-6; batch 1.25e-6, 1.3e-7, 7.5e-6; priority 5e-6, 5e-7, 3e-5; eu x 1.1.
    assert costs == [
        (Decimal("0.003024"), "catalog"),
        (Decimal("0.001512"), "catalog"),
        (Decimal("0.015") + Decimal("0.001") + Decimal("0.015"), "catalog"),
        (Decimal("0.0075") + Decimal("0.00052") + Decimal("0.0075"), "catalog"),
        (Decimal("0.0075") + Decimal("0.00052") + Decimal("0.0075"), "catalog"),
        ((Decimal("0.03") + Decimal("0.002") + Decimal("0.03")) * Decimal("1.1"), "catalog"),
    ]


async def test_usage_records_keep_how_each_request_was_served(settings: Settings) -> None:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:
        await insert_snapshot_models(conn, MODELS, JUNE)
    finally:
        await conn.close()
    key = uuid.uuid4()
    events = [
        event("deepseek/deepseek-flash", OFF_PEAK, key),
        event("gpt-5.4", PEAK, key, service_tier="batch", data_residency="us",
              vertex_location="global", inference_geo="us"),
    ]  # fmt: skip
    await emit(settings, events)
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 2)
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT service_tier, data_residency, vertex_location, inference_geo, cost_usd "
            "FROM usage_records ORDER BY occurred_at")
    finally:
        await conn.close()
    assert [tuple(row) for row in rows] == [
        (None, None, None, None, Decimal("0.001512")),
        ("batch", "us", "global", "us",
         (Decimal("0.0075") + Decimal("0.00052") + Decimal("0.0075")) * Decimal("1.1")),
    ]  # fmt: skip


def test_a_v2_event_keeps_its_fingerprint_after_the_v3_upgrade() -> None:
    """A copy of an event projected by v2 code, re-sent after the upgrade, is the same event
    (a duplicate), not a conflicting one: the digest below is what the v2 projector
    stored for the v2 example of docs/events.md (with metadata)."""
    v2 = json.loads(_v2_example())
    event = parse_event(json.dumps({**v2, "metadata": {"team": "search"}}).encode())
    assert isinstance(event, UsageRecorded)
    assert event.schema_version == 4
    assert fingerprint(event).hex() == "76eed2d5ea331a7b0fea4f5f3b361338"
    served = event.model_copy(update={"service_tier": "priority"})
    assert fingerprint(served) != fingerprint(event)


def _v2_example() -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    block = doc.split("<!-- example v2 -->", 1)[1].split("```json\n", 1)[1]
    return block.split("```", 1)[0]
