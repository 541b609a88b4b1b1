"""ReportReader: spend by key, model or provider for a month, from the monthly summaries.

Reports read ``monthly_usage_summaries`` only (one row per key, model and month), never the
raw usage records, so a month of hundreds of millions of requests reports in milliseconds:
the month filter uses ``monthly_usage_summaries_month (month, model)`` and a key filter the
primary key ``(api_key_id, month, model)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal
from uuid import UUID

import asyncpg

GroupBy = Literal["key", "model", "provider"]

_LABEL = {
    "key": "s.api_key_id::text",
    "model": "s.model",
    "provider": "coalesce(s.provider, 'unknown')",
}


@dataclass(frozen=True, slots=True)
class SpendRow:
    label: str  # key id, model or provider
    name: str | None  # the key's name when grouped by key
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    unpriced_requests: int


async def spend_report(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, month: date,
    by: GroupBy = "key", key_id: UUID | None = None, top: int | None = None,
) -> list[SpendRow]:
    """Spend for ``month`` grouped ``by``, most expensive first; ``top`` rows at most."""
    if by not in _LABEL:
        raise ValueError(f"by must be one of key, model, provider; got {by!r}")
    label = _LABEL[by]
    name = "max(k.name)" if by == "key" else "NULL::text"
    rows = await conn.fetch(
        f"SELECT {label} AS label, {name} AS name, sum(s.requests)::bigint AS requests, "
        "sum(s.errors)::bigint AS errors, sum(s.prompt_tokens)::bigint AS prompt_tokens, "
        "sum(s.completion_tokens)::bigint AS completion_tokens, sum(s.cost_usd) AS cost_usd, "
        "sum(s.unpriced_requests)::bigint AS unpriced_requests "
        "FROM monthly_usage_summaries s LEFT JOIN api_keys k ON k.id = s.api_key_id "
        "WHERE s.month = $1 AND ($2::uuid IS NULL OR s.api_key_id = $2) "
        f"GROUP BY {label} ORDER BY sum(s.cost_usd) DESC, 1 LIMIT $3",
        month.replace(day=1), key_id, top,
    )
    return [SpendRow(**dict(row)) for row in rows]


async def months_with_usage(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> list[date]:
    rows = await conn.fetch("SELECT DISTINCT month FROM monthly_usage_summaries ORDER BY 1")
    return [row["month"] for row in rows]
