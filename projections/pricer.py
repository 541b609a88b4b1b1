"""CatalogPricer: the cost of usage events that arrive without one, as the catalog was then.

A usage event's cost never changes afterwards: the emitter's cost is kept as sent, and an
event without one is priced against the model's price-history entry valid at occurred_at,
with the off-peak window of that moment, its service tier and its region.
Replays and rebuilds read the same history, so they compute the same cost.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import ValidationError

from ledger.catalog import ModelRecord
from ledger.events import UsageRecorded
from ledger.pricing import Usage, price

EMITTER, CATALOG, UNPRICED = "emitter", "catalog", "unpriced"

# The event's model should be canonical, but a gateway may pass what the client asked for:
# resolve an exact name first, then an alias, then a provider-prefixed name ("openai/gpt-4o").
_HISTORY = """
WITH asked AS (SELECT DISTINCT unnest($1::text[]) AS asked),
resolved AS (
    SELECT asked, coalesce(
        (SELECT h.model FROM model_price_history h WHERE h.model = asked LIMIT 1),
        (SELECT a.model FROM model_aliases a WHERE a.alias = asked),
        (SELECT m.name FROM models m WHERE position('/' IN asked) > 0
            AND m.provider = split_part(asked, '/', 1)
            AND m.name = substr(asked, position('/' IN asked) + 1))
    ) AS model
    FROM asked
)
SELECT r.asked, h.model, h.valid_from, h.raw::text AS raw
FROM resolved r JOIN model_price_history h ON h.model = r.model
ORDER BY r.asked, h.valid_from
"""


class CatalogPricer:
    def __init__(self) -> None:
        # History rows never change once written, so parsed records are cached for good.
        self._records: dict[tuple[str, datetime], ModelRecord] = {}

    async def costs(
        self, conn: asyncpg.Connection, events: Sequence[UsageRecorded]
    ) -> list[tuple[Decimal | None, str] | Exception]:
        """(cost, source) per event, or the exception pricing that one event raised."""
        needed = sorted({e.model for e in events if e.cost_usd is None})
        history = await self._history(conn, needed) if needed else {}
        result: list[tuple[Decimal | None, str] | Exception] = []
        for event in events:
            if event.cost_usd is not None:
                result.append((event.cost_usd, EMITTER))
                continue
            try:
                record = _valid_at(history.get(event.model, []), event.occurred_at)
                result.append(_price(record, event) if record is not None else (None, UNPRICED))
            except Exception as exc:  # one event's bad arithmetic must not fail the batch
                result.append(exc)
        return result

    async def _history(
        self, conn: asyncpg.Connection, models: list[str]
    ) -> dict[str, list[tuple[datetime, ModelRecord]]]:
        rows = await conn.fetch(_HISTORY, models)
        history: dict[str, list[tuple[datetime, ModelRecord]]] = {}
        for row in rows:
            key = (row["model"], row["valid_from"])
            record = self._records.get(key)
            if record is None:
                raw: Any = json.loads(row["raw"], parse_float=Decimal)
                record = ModelRecord.from_berriai(row["model"], raw)
                self._records[key] = record
            history.setdefault(row["asked"], []).append((row["valid_from"], record))
        return history


def _valid_at(
    versions: list[tuple[datetime, ModelRecord]], moment: datetime
) -> ModelRecord | None:
    index = bisect.bisect_right([valid_from for valid_from, _ in versions], moment)
    return versions[index - 1][1] if index else None


def _price(record: ModelRecord, event: UsageRecorded) -> tuple[Decimal | None, str]:
    try:
        usage = Usage(
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            cache_read_input_tokens=event.cache_read_input_tokens,
            cache_creation_input_tokens=event.cache_creation_input_tokens,
            reasoning_tokens=event.reasoning_tokens,
            audio_input_tokens=event.audio_input_tokens,
            audio_output_tokens=event.audio_output_tokens,
            images=event.images,
            input_seconds=event.input_seconds,
            output_seconds=event.output_seconds,
            characters=event.characters,
        )
    except ValidationError:
        return None, UNPRICED  # inconsistent counts: record the usage, do not guess a cost
    breakdown = price(
        record, usage, at=event.occurred_at, service_tier=event.service_tier,
        data_residency=event.data_residency, vertex_location=event.vertex_location,
        inference_geo=event.inference_geo,
    )  # fmt: skip
    if breakdown.unpriced:
        return None, UNPRICED
    return breakdown.total, CATALOG
