"""A usage event whose parts exceed their totals (cache reads above prompt_tokens, reasoning
above completion_tokens) is recorded and counted, never priced by the ledger and never a
dead letter: what docs/pricing.md (rule 2) and docs/projections.md (Cost) say."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from ledger.events import UsageRecorded
from ledger.settings import Settings
from tests.projections.helpers import emit, fetchval, running_worker, wait_for_rows

OCTOBER = datetime(2026, 10, 15, 12, tzinfo=UTC)


def _usage(key: uuid.UUID, *, prompt: int, cache_read: int, completion: int = 10,
           reasoning: int = 0, cost: Decimal | None = None) -> UsageRecorded:
    return UsageRecorded(
        event_id=uuid.uuid4(), occurred_at=OCTOBER, source="test", api_key_id=key,
        request_id=f"req-{uuid.uuid4().hex[:8]}", model="gpt-4o", provider="openai",
        prompt_tokens=prompt, completion_tokens=completion, cache_read_input_tokens=cache_read,
        reasoning_tokens=reasoning, status="success", cost_usd=cost)


async def test_parts_above_their_totals_are_recorded_unpriced(settings: Settings) -> None:
    assert settings.database_url
    conn = await asyncpg.connect(settings.database_url)
    try:  # gpt-4o has a price, so only the inconsistent counts can leave an event unpriced
        raw = json.dumps({"litellm_provider": "openai", "mode": "chat",
                          "input_cost_per_token": 0.0000025, "output_cost_per_token": 0.00001})
        since = datetime(2026, 1, 1, tzinfo=UTC)
        # As the catalog projection writes them: names resolve through the model row.
        await conn.execute("INSERT INTO models (name, provider, raw, valid_from) "
                           "VALUES ('gpt-4o', 'openai', $1, $2)", raw, since)
        await conn.execute(
            "INSERT INTO model_price_history (model, valid_from, raw) VALUES ('gpt-4o', $1, $2)",
            since, raw)
    finally:
        await conn.close()
    key = uuid.uuid4()
    consistent = _usage(key, prompt=1000, cache_read=400)
    # Anthropic-style input_tokens that leave the cache reads out: 100 + 1000 were read.
    cache_above_prompt = _usage(key, prompt=100, cache_read=1000)
    reasoning_above_completion = _usage(key, prompt=100, cache_read=0, completion=10,
                                        reasoning=50)
    with_emitter_cost = _usage(key, prompt=100, cache_read=1000, cost=Decimal("0.0042"))
    events = [consistent, cache_above_prompt, reasoning_above_completion, with_emitter_cost]
    await emit(settings, events)
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 4)
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = {row["event_id"]: row for row in await conn.fetch(
            "SELECT event_id, prompt_tokens, cache_read_input_tokens, reasoning_tokens, "
            "cost_usd, cost_source FROM usage_records")}
        summary = await conn.fetchrow(
            "SELECT requests, prompt_tokens, cache_read_input_tokens, cost_usd, "
            "unpriced_requests FROM monthly_usage_summaries WHERE api_key_id = $1", key)
    finally:
        await conn.close()
    assert await fetchval(settings.database_url, "SELECT count(*) FROM dead_letters") == 0
    assert rows[consistent.event_id]["cost_source"] == "catalog"
    for unpriced in (cache_above_prompt, reasoning_above_completion):
        assert (rows[unpriced.event_id]["cost_usd"], rows[unpriced.event_id]["cost_source"]) == (
            None, "unpriced")
    assert rows[cache_above_prompt.event_id]["prompt_tokens"] == 100  # kept as sent
    assert rows[cache_above_prompt.event_id]["cache_read_input_tokens"] == 1000
    assert (rows[with_emitter_cost.event_id]["cost_usd"],
            rows[with_emitter_cost.event_id]["cost_source"]) == (Decimal("0.0042"), "emitter")
    catalog_cost = 600 * Decimal("0.0000025") + 400 * Decimal("0.0000025") + 10 * Decimal(
        "0.00001")  # no cache price: cache reads at the input rate
    assert summary is not None
    assert dict(summary) == {"requests": 4, "prompt_tokens": 1300,
                             "cache_read_input_tokens": 2400,
                             "cost_usd": catalog_cost + Decimal("0.0042"),
                             "unpriced_requests": 2}
