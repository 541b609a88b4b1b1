"""Usage queries: records by key or model (keyset-paged), totals, monthly summaries, spend.

Every query is shaped for an index (see docs/readmodels.md for the EXPLAIN output):
records and totals use ``usage_records_key_time`` / ``usage_records_model_time``
``(filter, occurred_at, event_id)`` with partition pruning on ``occurred_at``; pages continue
from the row tuple ``(occurred_at, event_id) > cursor`` (never OFFSET, which reads and discards
every skipped row); summaries and spend use the primary key ``(api_key_id, month, model)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from readmodels.cache import MISSING, Cache
from readmodels.exceptions import InvalidArgumentError

if TYPE_CHECKING:
    from readmodels.readmodels import Database

MAX_PAGE = 10_000

_RECORD_COLUMNS = """
    event_id, occurred_at, request_id, api_key_id, model, requested_model, provider, status,
    error_code, prompt_tokens, completion_tokens, cache_read_input_tokens,
    cache_creation_input_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens,
    images, output_images, input_seconds, output_seconds, characters, latency_ms, cost_usd,
    cost_source, metadata, source, service_tier, data_residency, vertex_location, inference_geo
"""
_RANGE = "occurred_at >= $2 AND occurred_at < $3"
_PAGE_FIRST = "SELECT {cols} FROM usage_records WHERE {col} = $1 AND {range} " \
    "ORDER BY occurred_at, event_id LIMIT $4"
_PAGE_NEXT = "SELECT {cols} FROM usage_records WHERE {col} = $1 AND {range} " \
    "AND (occurred_at, event_id) > ($4, $5) ORDER BY occurred_at, event_id LIMIT $6"
_QUERIES = {
    col: (_PAGE_FIRST.format(cols=_RECORD_COLUMNS, col=col, range=_RANGE),
          _PAGE_NEXT.format(cols=_RECORD_COLUMNS, col=col, range=_RANGE))
    for col in ("api_key_id", "model")
}
_SUMS = """
    COALESCE(sum(requests), 0) AS requests,
    COALESCE(sum(errors), 0) + count(*) FILTER (WHERE status = 'error') AS errors,
    COALESCE(sum(unpriced_requests), 0)
        + count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced_requests,
    COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
    COALESCE(sum(completion_tokens), 0) AS completion_tokens,
    COALESCE(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
    COALESCE(sum(cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
    COALESCE(sum(reasoning_tokens), 0) AS reasoning_tokens,
    COALESCE(sum(audio_input_tokens), 0) AS audio_input_tokens,
    COALESCE(sum(audio_output_tokens), 0) AS audio_output_tokens,
    COALESCE(sum(images), 0) AS images,
    COALESCE(sum(output_images), 0) AS output_images,
    COALESCE(sum(characters), 0) AS characters,
    COALESCE(sum(input_seconds), 0) AS input_seconds,
    COALESCE(sum(output_seconds), 0) AS output_seconds,
    COALESCE(sum(cost_usd), 0) AS cost_usd
"""
# Whole months come from the summaries (one row per model and month), only the partial months
# at either end from usage_records: a year of a busy key costs a few hundred rows, not millions.
# $4/$5: whole months [first, end) as dates; $6/$7: the same bounds as timestamps.
_TOTALS = f"""
SELECT {_SUMS} FROM (
    SELECT requests, errors, unpriced_requests, prompt_tokens, completion_tokens,
           cache_read_input_tokens, cache_creation_input_tokens, reasoning_tokens,
           audio_input_tokens, audio_output_tokens, images, output_images, characters,
           input_seconds, output_seconds, cost_usd, NULL::text AS status,
           NULL::text AS cost_source
      FROM monthly_usage_summaries WHERE api_key_id = $1 AND month >= $4 AND month < $5
    UNION ALL
    SELECT 1, 0, 0, prompt_tokens, completion_tokens, cache_read_input_tokens,
           cache_creation_input_tokens, reasoning_tokens, audio_input_tokens,
           audio_output_tokens, images, output_images, characters, input_seconds,
           output_seconds, cost_usd, status, cost_source
      FROM usage_records WHERE api_key_id = $1 AND occurred_at >= $2 AND occurred_at < $6
    UNION ALL
    SELECT 1, 0, 0, prompt_tokens, completion_tokens, cache_read_input_tokens,
           cache_creation_input_tokens, reasoning_tokens, audio_input_tokens,
           audio_output_tokens, images, output_images, characters, input_seconds,
           output_seconds, cost_usd, status, cost_source
      FROM usage_records WHERE api_key_id = $1 AND occurred_at >= $7 AND occurred_at < $3
) AS parts"""
_SUMMARY_COLUMNS = """
    api_key_id, model, month, provider, requests, errors, unpriced_requests, prompt_tokens,
    completion_tokens, cache_read_input_tokens, cache_creation_input_tokens, reasoning_tokens,
    audio_input_tokens, audio_output_tokens, images, output_images, characters, input_seconds,
    output_seconds, cost_usd, first_occurred_at, last_occurred_at
"""
_MONTH = f"""SELECT {_SUMMARY_COLUMNS} FROM monthly_usage_summaries
WHERE api_key_id = $1 AND month = $2 ORDER BY model"""
_SUMMARIES = f"""SELECT {_SUMMARY_COLUMNS} FROM monthly_usage_summaries
WHERE api_key_id = $1 AND month >= $2 AND month <= $3 ORDER BY month, model"""
_SPEND = """SELECT COALESCE(sum(cost_usd), 0) FROM monthly_usage_summaries
WHERE api_key_id = $1 AND month = $2"""

_EARLIEST = date(1, 1, 1)
_LATEST = date(9999, 12, 1)


@dataclass(frozen=True, slots=True)
class UsageCursor:
    """Where a page ended; rows strictly after ``(occurred_at, event_id)`` come next."""

    occurred_at: datetime
    event_id: UUID


@dataclass(frozen=True, slots=True)
class UsageRecord:
    event_id: UUID
    occurred_at: datetime
    request_id: str
    api_key_id: UUID
    model: str
    requested_model: str | None
    provider: str | None
    status: str
    error_code: str | None
    prompt_tokens: int
    completion_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    reasoning_tokens: int
    audio_input_tokens: int
    audio_output_tokens: int
    images: int  # input images
    output_images: int  # images the model generated
    input_seconds: Decimal
    output_seconds: Decimal
    characters: int
    latency_ms: int | None
    cost_usd: Decimal | None
    cost_source: str
    metadata: Mapping[str, Any]
    source: str
    # How it was served (usage.recorded v3); None: standard tier, no regional uplift.
    service_tier: str | None = None
    data_residency: str | None = None
    vertex_location: str | None = None
    inference_geo: str | None = None


@dataclass(frozen=True, slots=True)
class RecordPage:
    items: tuple[UsageRecord, ...]
    next_cursor: UsageCursor | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class UsageTotals:
    requests: int
    errors: int
    unpriced_requests: int
    prompt_tokens: int
    completion_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    reasoning_tokens: int
    audio_input_tokens: int
    audio_output_tokens: int
    images: int  # input images
    output_images: int  # images the model generated
    characters: int
    input_seconds: Decimal
    output_seconds: Decimal
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class MonthlySummary:
    api_key_id: UUID
    model: str
    month: date
    provider: str | None
    totals: UsageTotals
    first_occurred_at: datetime
    last_occurred_at: datetime


@dataclass(frozen=True, slots=True)
class MonthlyUsage:
    """One key's month: totals over every model, and the per-model summaries."""

    api_key_id: UUID
    month: date
    totals: UsageTotals
    by_model: tuple[MonthlySummary, ...]


_INT_TOTALS = (
    "requests", "errors", "unpriced_requests", "prompt_tokens", "completion_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "reasoning_tokens",
    "audio_input_tokens", "audio_output_tokens", "images", "output_images", "characters",
)


def _totals(row: Mapping[str, Any] | asyncpg.Record) -> UsageTotals:
    # sum(bigint) is numeric in PostgreSQL (it cannot overflow); counts are exact integers.
    ints = {name: int(row[name]) for name in _INT_TOTALS}
    return UsageTotals(
        **ints, input_seconds=Decimal(row["input_seconds"]),
        output_seconds=Decimal(row["output_seconds"]), cost_usd=Decimal(row["cost_usd"]),
    )


def _add(a: UsageTotals, b: UsageTotals) -> UsageTotals:
    ints = {name: getattr(a, name) + getattr(b, name) for name in _INT_TOTALS}
    return UsageTotals(
        **ints, input_seconds=a.input_seconds + b.input_seconds,
        output_seconds=a.output_seconds + b.output_seconds, cost_usd=a.cost_usd + b.cost_usd,
    )


_ZERO = _totals({name: 0 for name in (*_INT_TOTALS, "input_seconds", "output_seconds",
                                      "cost_usd")})


def _record(row: asyncpg.Record) -> UsageRecord:
    values = dict(row.items())
    metadata = values.pop("metadata")
    if isinstance(metadata, str):  # asyncpg returns jsonb as text unless a codec is set
        metadata = json.loads(metadata)
    return UsageRecord(**values, metadata=MappingProxyType(metadata))


def _summary(row: asyncpg.Record) -> MonthlySummary:
    return MonthlySummary(
        api_key_id=row["api_key_id"], model=row["model"], month=row["month"],
        provider=row["provider"], totals=_totals(row),
        first_occurred_at=row["first_occurred_at"], last_occurred_at=row["last_occurred_at"],
    )


def as_uuid(value: UUID | str) -> UUID:
    """``value`` as a UUID; a malformed string is the caller's error, not the database's."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgumentError(f"not a UUID: {value!r}") from None


def month_start(moment: datetime) -> date:
    """First day of ``moment``'s month in UTC: the ``month`` of monthly_usage_summaries."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _whole_months(start: datetime, end: datetime) -> tuple[date, date]:
    """The UTC months lying wholly inside ``[start, end)``, as ``[first, stop)``."""
    first = month_start(start)
    if start.astimezone(UTC) > datetime(first.year, first.month, 1, tzinfo=UTC):
        first = _next_month(first)
    stop = month_start(end)
    return (first, stop) if first < stop else (first, first)


def _check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidArgumentError("start and end must be timezone-aware datetimes")
    if end < start:
        raise InvalidArgumentError(f"end {end.isoformat()} is before start {start.isoformat()}")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")


def _now() -> datetime:
    return datetime.now(UTC)


class UsageReader:
    """Reads of ``usage_records`` and ``monthly_usage_summaries``; ``ReadModels.usage``."""

    def __init__(
        self,
        db: Database,
        spend_cache: Cache[str, tuple[date, Decimal]],
        *,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._db = db
        self._spend = spend_cache
        self._clock = clock

    async def records_by_key(
        self, key_id: UUID | str, start: datetime, end: datetime,
        after: UsageCursor | None = None, limit: int = 100,
    ) -> RecordPage:
        """A key's records with ``start <= occurred_at < end``, oldest first, one page."""
        return await self._page("api_key_id", as_uuid(key_id), start, end, after, limit)

    async def records_by_model(
        self, model: str, start: datetime, end: datetime,
        after: UsageCursor | None = None, limit: int = 100,
    ) -> RecordPage:
        """A model's records (canonical name as stored) in ``[start, end)``, oldest first."""
        return await self._page("model", model, start, end, after, limit)

    async def _page(
        self, column: str, value: object, start: datetime, end: datetime,
        after: UsageCursor | None, limit: int,
    ) -> RecordPage:
        _check_range(start, end)
        _check_limit(limit)
        first, following = _QUERIES[column]
        # One row more than asked tells whether another page exists.
        if after is None:
            rows = await self._db.fetch_planned("read usage records", first, value, start,
                                                end, limit + 1)
        else:
            rows = await self._db.fetch_planned("read usage records", following, value, start,
                                                end, after.occurred_at, after.event_id,
                                                limit + 1)
        items = tuple(_record(row) for row in rows[:limit])
        cursor = None
        if len(rows) > limit:
            cursor = UsageCursor(items[-1].occurred_at, items[-1].event_id)
        return RecordPage(items, cursor)

    async def totals(self, key_id: UUID | str, start: datetime, end: datetime) -> UsageTotals:
        """Request, token and cost sums of a key's records in ``[start, end)``."""
        _check_range(start, end)
        first, stop = _whole_months(start, end)
        low = datetime(first.year, first.month, 1, tzinfo=UTC) if first < stop else end
        high = datetime(stop.year, stop.month, 1, tzinfo=UTC) if first < stop else end
        rows = await self._db.fetch_planned("sum usage", _TOTALS, as_uuid(key_id), start,
                                            end, first, stop, low, high)
        return _totals(rows[0]) if rows else _ZERO

    async def monthly(self, key_id: UUID | str, month: date) -> MonthlyUsage:
        """A key's summaries for ``month`` (any day in it), per model and in total."""
        first = date(month.year, month.month, 1)
        ident = as_uuid(key_id)
        rows = await self._db.fetch("read monthly summary", _MONTH, ident, first)
        by_model = tuple(_summary(row) for row in rows)
        total = _ZERO
        for summary in by_model:
            total = _add(total, summary.totals)
        return MonthlyUsage(ident, first, total, by_model)

    async def summaries(
        self, key_id: UUID | str, since: date | None = None, until: date | None = None
    ) -> tuple[MonthlySummary, ...]:
        """A key's monthly summaries by month then model, optionally within [since, until]."""
        low = _EARLIEST if since is None else date(since.year, since.month, 1)
        high = _LATEST if until is None else date(until.year, until.month, 1)
        rows = await self._db.fetch("list monthly summaries", _SUMMARIES, as_uuid(key_id),
                                    low, high)
        return tuple(_summary(row) for row in rows)

    async def month_to_date_spend(self, key_id: UUID | str) -> Decimal:
        """Cost of the key's usage in the current UTC month, from the summaries (cached).

        Evicted when a notification lists the key in ``spend_key_ids``; the short TTL is only
        the backstop.
        """
        ident = str(as_uuid(key_id))
        month = month_start(self._clock())
        found = self._spend.lookup(ident)
        if found is not MISSING and found is not None and found[0] == month:
            return found[1]
        if found is not MISSING and found is not None:
            self._spend.evict(ident)  # last month's figure: the month rolled over
        loaded = await self._spend.load(ident, self._load_spend)
        return Decimal(0) if loaded is None else loaded[1]

    async def _load_spend(self, key_id: str) -> tuple[date, Decimal]:
        month = month_start(self._clock())
        spent = await self._db.fetchval("read month-to-date spend", _SPEND, UUID(key_id), month)
        return (month, Decimal(spent))

    def invalidate_spend(self, key_ids: frozenset[str]) -> None:
        for key_id in key_ids:
            self._spend.evict(key_id)

    def clear(self) -> None:
        self._spend.clear()
