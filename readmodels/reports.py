"""Spend by key, model or provider for a month (``spend_report``), from the monthly summaries.

Reports read ``monthly_usage_summaries`` only (one row per key, model and month), never the
raw usage records, so a month of hundreds of millions of requests reports in milliseconds:
the month filter uses ``monthly_usage_summaries_month (month, model)`` and a key filter the
primary key ``(api_key_id, month, model)``.

Usage whose ``api_key_id`` has no row in ``api_keys`` (its ``api_key.created`` is not
projected yet, or never will be) is counted like any other and marked: ``SpendRow.unknown_key``
when grouped by key, and ``unknown_key_usage`` sums it (``ledger status``, ``ledger usage
report``).

:func:`key_totals` is the one exception, a reconciliation (the demo's): it sums the same keys
from the raw records and from the summaries, which must agree.
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
    unknown_key: bool | None  # grouped by key: no such key in api_keys; otherwise None


@dataclass(frozen=True, slots=True)
class UnknownKeyUsage:
    """Usage recorded for key ids that ``api_keys`` does not hold."""

    requests: int
    cost_usd: Decimal  # priced requests only; the others are counted in unpriced_requests
    key_ids: int
    unpriced_requests: int

    def describe(self) -> str:
        """``4 requests, $0.0030 over 1 key id (1 unpriced)``."""
        unpriced = f" ({self.unpriced_requests} unpriced)" if self.unpriced_requests else ""
        return (f"{self.requests} request{'' if self.requests == 1 else 's'}, "
                f"${self.cost_usd} over {self.key_ids} key id{'' if self.key_ids == 1 else 's'}"
                f"{unpriced}")


async def spend_report(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, month: date,
    by: GroupBy = "key", key_id: UUID | None = None, top: int | None = None,
) -> list[SpendRow]:
    """Spend for ``month`` grouped ``by``, most expensive first; ``top`` rows at most."""
    if by not in _LABEL:
        raise ValueError(f"by must be one of key, model, provider; got {by!r}")
    label = _LABEL[by]
    name = "max(k.name)" if by == "key" else "NULL::text"
    unknown = "bool_and(k.id IS NULL)" if by == "key" else "NULL::boolean"
    rows = await conn.fetch(
        f"SELECT {label} AS label, {name} AS name, sum(s.requests)::bigint AS requests, "
        "sum(s.errors)::bigint AS errors, sum(s.prompt_tokens)::bigint AS prompt_tokens, "
        "sum(s.completion_tokens)::bigint AS completion_tokens, sum(s.cost_usd) AS cost_usd, "
        f"sum(s.unpriced_requests)::bigint AS unpriced_requests, {unknown} AS unknown_key "
        "FROM monthly_usage_summaries s LEFT JOIN api_keys k ON k.id = s.api_key_id "
        "WHERE s.month = $1 AND ($2::uuid IS NULL OR s.api_key_id = $2) "
        f"GROUP BY {label} ORDER BY sum(s.cost_usd) DESC, 1 LIMIT $3",
        month.replace(day=1), key_id, top,
    )
    return [SpendRow(**dict(row)) for row in rows]


async def unknown_key_usage(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *,
    month: date | None = None, key_id: UUID | None = None,
) -> UnknownKeyUsage:
    """Usage of key ids with no row in ``api_keys``: in ``month``, or in every month."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(s.requests), 0)::bigint AS requests, "
        "coalesce(sum(s.cost_usd), 0) AS cost_usd, "
        "count(DISTINCT s.api_key_id) AS key_ids, "
        "coalesce(sum(s.unpriced_requests), 0)::bigint AS unpriced_requests "
        "FROM monthly_usage_summaries s LEFT JOIN api_keys k ON k.id = s.api_key_id "
        "WHERE k.id IS NULL AND ($1::date IS NULL OR s.month = $1) "
        "AND ($2::uuid IS NULL OR s.api_key_id = $2)",
        None if month is None else month.replace(day=1), key_id,
    )
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return UnknownKeyUsage(**dict(row))


async def months_with_usage(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
) -> list[date]:
    rows = await conn.fetch("SELECT DISTINCT month FROM monthly_usage_summaries ORDER BY 1")
    return [row["month"] for row in rows]


TOTAL_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd",
                "unpriced")
_RECORD_TOTALS = """
SELECT count(*) AS requests, count(*) FILTER (WHERE status = 'error') AS errors,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced
FROM usage_records WHERE api_key_id = ANY($1::uuid[])
"""
_SUMMARY_TOTALS = """
SELECT coalesce(sum(requests), 0)::bigint AS requests,
       coalesce(sum(errors), 0)::bigint AS errors,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       coalesce(sum(unpriced_requests), 0)::bigint AS unpriced
FROM monthly_usage_summaries WHERE api_key_id = ANY($1::uuid[])
"""


async def key_totals(
    conn: asyncpg.Connection, key_ids: list[UUID], *, source: Literal["records", "summaries"]
) -> dict[str, int | Decimal]:
    """The ``TOTAL_FIELDS`` of these keys, all time, from the raw records or the summaries."""
    row = await conn.fetchrow(_RECORD_TOTALS if source == "records" else _SUMMARY_TOTALS,
                              key_ids)
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return {name: row[name] for name in TOTAL_FIELDS}
