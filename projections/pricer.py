"""CatalogPricer: the cost of usage events that arrive without one, as the catalog was then.

The emitter's cost is kept as sent. An event without one is priced against the price-history
entry valid at occurred_at of the model its name resolves to (``ledger.catalog.naming``),
with the off-peak window of that moment, its service tier and its region. So
the cost is a function of the event and the catalog alone: a rebuild computes the same, and
when the catalog learns something after the event was projected (its model, an alias, a
price valid from before it), the catalog projection re-prices it (``projections.repricing``).
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
from ledger.catalog.naming import resolve_in_db
from ledger.events import UsageRecorded
from ledger.pricing import checked_counts
from ledger.pricing_plan import PlanCache

EMITTER, CATALOG, UNPRICED = "emitter", "catalog", "unpriced"

# The event's model should be canonical, but a gateway may pass what the client asked for:
# names resolve by ledger.catalog.naming's one rule (as the read models and the CLI resolve
# them), then the resolved models' history is read.
_HISTORY = """
SELECT model, valid_from, raw::text AS raw FROM model_price_history
 WHERE model = ANY($1::text[])
 ORDER BY model, valid_from
"""


class CatalogPricer:
    def __init__(self) -> None:
        # History rows never change once written, so parsed records are cached for good, and
        # so are the plans (resolved rates) priced from them.
        self._records: dict[tuple[str, datetime], ModelRecord] = {}
        self._plans = PlanCache()

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
                result.append(
                    self._price(record, event) if record is not None else (None, UNPRICED)
                )
            except Exception as exc:  # one event's bad arithmetic must not fail the batch
                result.append(exc)
        return result

    def _price(self, record: ModelRecord, event: UsageRecorded) -> tuple[Decimal | None, str]:
        """What ``ledger.pricing.price`` makes of the event (its total, or unpriced), from the
        cached plan: only the arithmetic on the event's counts is done per event."""
        try:
            counts = checked_counts((
                event.prompt_tokens, event.completion_tokens, event.cache_read_input_tokens,
                event.cache_creation_input_tokens, 0, event.reasoning_tokens,
                event.audio_input_tokens, event.audio_output_tokens, event.images,
                event.output_images, event.input_seconds, event.output_seconds,
                event.characters,
            ))  # fmt: skip
        except ValidationError:
            return None, UNPRICED  # inconsistent counts: record the usage, do not guess a cost
        total = self._plans.total(
            record, counts, at=event.occurred_at, service_tier=event.service_tier,
            data_residency=event.data_residency, vertex_location=event.vertex_location,
            inference_geo=event.inference_geo,
        )  # fmt: skip
        return (None, UNPRICED) if total is None else (total, CATALOG)

    async def _history(
        self, conn: asyncpg.Connection, asked: list[str]
    ) -> dict[str, list[tuple[datetime, ModelRecord]]]:
        """Each name as asked -> the price history of the model it resolves to, oldest first."""
        resolved, _ = await resolve_in_db(conn, asked)
        models = sorted({found.model for found in resolved.values() if found is not None})
        by_model: dict[str, list[tuple[datetime, ModelRecord]]] = {}
        for row in await conn.fetch(_HISTORY, models) if models else ():
            key = (row["model"], row["valid_from"])
            record = self._records.get(key)
            if record is None:
                raw: Any = json.loads(row["raw"], parse_float=Decimal)
                record = ModelRecord.from_berriai(row["model"], raw)
                self._records[key] = record
            by_model.setdefault(row["model"], []).append((row["valid_from"], record))
        return {name: by_model.get(found.model, []) for name, found in resolved.items()
                if found is not None}


def _valid_at(
    versions: list[tuple[datetime, ModelRecord]], moment: datetime
) -> ModelRecord | None:
    index = bisect.bisect_right([valid_from for valid_from, _ in versions], moment)
    return versions[index - 1][1] if index else None


