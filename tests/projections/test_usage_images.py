"""Generated images (usage.recorded v4 ``output_images``) stored, summed and priced apart from
input images: the projection's COPY, its monthly sums, the pricer and reconcile."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.events import UsageRecorded
from projections.reconcile import compare
from tests.projections.helpers import insert_snapshot_models, project_usage

JUNE = datetime(2026, 6, 1, tzinfo=UTC)
SEPTEMBER = datetime(2026, 9, 2, 8, tzinfo=UTC)
MODELS = ("gemini-3-pro-image-preview", "gpt-4o")


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        await insert_snapshot_models(connection, MODELS, JUNE)
        yield connection
    finally:
        await connection.close()


def _event(key: uuid.UUID, model: str, **counts: Any) -> UsageRecorded:
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=SEPTEMBER, source="test", request_id="r",
        api_key_id=key, model=model, status="success", **{"completion_tokens": 0, **counts})


async def test_generated_images_are_stored_summed_and_priced_per_output_image(
    conn: asyncpg.Connection,
) -> None:
    key = uuid.uuid4()
    await project_usage(conn, [
        # gemini-3-pro-image-preview: 0.000002 per prompt token, 0.0011 per input image,
        # 0.134 per output image.
        _event(key, "gemini-3-pro-image-preview", prompt_tokens=100, images=2, output_images=1),
        _event(key, "gemini-3-pro-image-preview", prompt_tokens=0, output_images=3),
        # gpt-4o has no output image price: unpriced, never zero.
        _event(key, "gpt-4o", prompt_tokens=10, output_images=1),
    ])  # fmt: skip
    rows = await conn.fetch(
        "SELECT model, images, output_images, cost_usd, cost_source FROM usage_records "
        "WHERE api_key_id = $1 ORDER BY model, output_images", key)
    assert [tuple(row) for row in rows] == [
        ("gemini-3-pro-image-preview", 2, 1, Decimal("0.1364"), "catalog"),
        ("gemini-3-pro-image-preview", 0, 3, Decimal("0.402"), "catalog"),
        ("gpt-4o", 0, 1, None, "unpriced"),
    ]
    sums = await conn.fetch(
        "SELECT model, images, output_images, cost_usd, unpriced_requests "
        "FROM monthly_usage_summaries WHERE api_key_id = $1 ORDER BY model", key)
    assert [tuple(row) for row in sums] == [
        ("gemini-3-pro-image-preview", 2, 4, Decimal("0.5384"), 0),
        ("gpt-4o", 0, 1, Decimal(0), 1),
    ]
    assert await compare(conn) == []
    # A damaged output_images sum is one reconcile reports.
    await conn.execute("UPDATE monthly_usage_summaries SET output_images = output_images + 1 "
                       "WHERE api_key_id = $1 AND model = 'gpt-4o'", key)
    assert [d.column for d in await compare(conn)] == ["output_images"]
