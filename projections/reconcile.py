"""Reconcile monthly_usage_summaries with usage_records, and repair what differs.

The summaries are a running sum the usage projection adds to batch by batch; usage_records
hold every event once. ``compare`` aggregates the records by (api_key_id, model, UTC month)
exactly as the projection does and sets the result beside the summaries in ONE statement
(one snapshot: a batch commits records and summary together, so live traffic never shows up
as a difference). Every summary column that is a sum or a bound of the records is compared;
``provider`` is a label (the last batch's non-null value wins), ``updated_at`` a timestamp.

``repair`` recomputes only the groups that differ. The full comparison runs without locks
(it may scan every partition); then, in one transaction holding the usage projection's
advisory lock EXCLUSIVELY (batches hold it shared for their whole transaction, so none is
half-way and none can start), it compares those groups again, rewrites the ones that still
differ from usage_records, checks them, and NOTIFYs the spend of their keys so read models
evict. PostgreSQL delivers the notification only on commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from ledger.invalidation import Invalidation
from projections.base import lock_key
from projections.exceptions import ReconcileError
from projections.storage import notify
from projections.usage import UsageProjection

Group = tuple[UUID, str, date]  # (api_key_id, model, month) — one summary row

# Counters summed from usage_records, with the summary column's type (sum() widens bigint).
_SUMMED = {
    "prompt_tokens": "bigint", "completion_tokens": "bigint",
    "cache_read_input_tokens": "bigint", "cache_creation_input_tokens": "bigint",
    "reasoning_tokens": "bigint", "audio_input_tokens": "bigint",
    "audio_output_tokens": "bigint", "images": "bigint", "output_images": "bigint",
    "input_seconds": "numeric",
    "output_seconds": "numeric", "characters": "bigint",
}
# What a summary row must equal, each as computed from the records of its group.
_FROM_RECORDS = {
    "requests": "count(*)",
    "errors": "count(*) FILTER (WHERE r.status = 'error')",
    **{column: f"coalesce(sum(r.{column}), 0)::{kind}" for column, kind in _SUMMED.items()},
    "cost_usd": "coalesce(sum(r.cost_usd), 0)",
    "unpriced_requests": "count(*) FILTER (WHERE r.cost_source = 'unpriced')",
    "first_occurred_at": "min(r.occurred_at)",
    "last_occurred_at": "max(r.occurred_at)",
}
COMPARED_COLUMNS: tuple[str, ...] = tuple(_FROM_RECORDS)
ROW = "row"  # the column of a difference where one side has no row at all

_MONTH_OF = "(date_trunc('month', r.occurred_at AT TIME ZONE 'UTC'))::date"
_AGGREGATES = ",\n       ".join(f"{sql} AS {column}" for column, sql in _FROM_RECORDS.items())

# The groups asked for, as three parallel arrays ($1 key ids, $2 models, $3 months).
_WANTED = "SELECT * FROM unnest($1::uuid[], $2::text[], $3::date[]) AS g(api_key_id, model, month)"
# Records of the wanted groups: an index range scan of (api_key_id, occurred_at) per group.
_GROUP_RECORDS = f"""
SELECT g.api_key_id, g.model, g.month, max(r.provider) AS provider,
       {_AGGREGATES}
FROM wanted g JOIN usage_records r
  ON r.api_key_id = g.api_key_id AND r.model = g.model
 AND r.occurred_at >= (g.month::timestamp AT TIME ZONE 'UTC')
 AND r.occurred_at < ((g.month + interval '1 month') AT TIME ZONE 'UTC')
GROUP BY g.api_key_id, g.model, g.month
"""
_GROUP_SUMMARIES = """
SELECT s.* FROM wanted g JOIN monthly_usage_summaries s
  ON s.api_key_id = g.api_key_id AND s.model = g.model AND s.month = g.month
"""


def _comparison(records: str, summaries: str, prefix: str = "") -> str:
    """Both sides FULL JOINed per group; only groups that differ (or exist on one side)."""
    pairs = ",\n       ".join(f"r.{c} AS r_{c}, s.{c} AS s_{c}" for c in COMPARED_COLUMNS)
    r_row = ", ".join(f"r.{c}" for c in COMPARED_COLUMNS)
    s_row = ", ".join(f"s.{c}" for c in COMPARED_COLUMNS)
    return f"""
WITH {prefix}records AS ({records}), summaries AS ({summaries})
SELECT coalesce(r.api_key_id, s.api_key_id) AS api_key_id, coalesce(r.model, s.model) AS model,
       coalesce(r.month, s.month) AS month,
       {pairs}
FROM records r FULL JOIN summaries s
  ON s.api_key_id = r.api_key_id AND s.model = r.model AND s.month = r.month
WHERE r.api_key_id IS NULL OR s.api_key_id IS NULL OR ({r_row}) IS DISTINCT FROM ({s_row})
ORDER BY 1, 3, 2
"""


_COMPARE_GROUPS = _comparison(_GROUP_RECORDS, _GROUP_SUMMARIES, prefix=f"wanted AS ({_WANTED}), ")

_COPIED = ", ".join(COMPARED_COLUMNS)
# Groups with records get the records' aggregate; groups without any lose their summary row.
_REWRITE_GROUPS = f"""
WITH wanted AS ({_WANTED}), records AS ({_GROUP_RECORDS}),
emptied AS (
    DELETE FROM monthly_usage_summaries s USING wanted g
    WHERE s.api_key_id = g.api_key_id AND s.model = g.model AND s.month = g.month
      AND NOT EXISTS (SELECT 1 FROM records r WHERE r.api_key_id = g.api_key_id
                      AND r.model = g.model AND r.month = g.month)
    RETURNING 1
), written AS (
    INSERT INTO monthly_usage_summaries AS s (api_key_id, model, month, provider, {_COPIED})
    SELECT api_key_id, model, month, provider, {_COPIED} FROM records
    ON CONFLICT (api_key_id, month, model) DO UPDATE SET
        provider = coalesce(EXCLUDED.provider, s.provider),
        {", ".join(f"{c} = EXCLUDED.{c}" for c in COMPARED_COLUMNS)},
        updated_at = now()
    RETURNING 1
)
SELECT (SELECT count(*) FROM emptied) AS emptied, (SELECT count(*) FROM written) AS written
"""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which summaries to reconcile: one UTC month and/or one key; everything by default."""

    month: date | None = None  # any day of the month
    key_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Difference:
    """One column of one summary row that is not what usage_records add up to.

    ``column`` is a summary column, or ``"row"`` when one side has no row for the group;
    then ``summary`` and ``records`` hold that side's request count, None for the absent side.
    """

    api_key_id: UUID
    model: str
    month: date
    column: str
    summary: Any
    records: Any

    @property
    def group(self) -> Group:
        return (self.api_key_id, self.model, self.month)


def describe(value: Any, column: str) -> str:
    """A value as operators read it: exact decimals, ISO times, ``absent`` for no row."""
    if value is None:
        return "absent"
    if column == ROW:
        return f"{value} requests"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


async def compare(conn: asyncpg.Connection, scope: Scope = Scope()) -> list[Difference]:
    """Every difference between the summaries in ``scope`` and their usage_records."""
    args: list[Any] = []
    on_records: list[str] = []
    on_summaries: list[str] = []
    if scope.month is not None:
        first = datetime(scope.month.year, scope.month.month, 1, tzinfo=UTC)
        after = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        args += [first, after, first.date()]
        # A range on occurred_at (not on its month) so only that month's partition is read.
        on_records.append(f"r.occurred_at >= ${len(args) - 2} AND r.occurred_at < ${len(args) - 1}")
        on_summaries.append(f"s.month = ${len(args)}")
    if scope.key_id is not None:
        args.append(scope.key_id)
        on_records.append(f"r.api_key_id = ${len(args)}")
        on_summaries.append(f"s.api_key_id = ${len(args)}")
    records = (f"SELECT r.api_key_id, r.model, {_MONTH_OF} AS month,\n       {_AGGREGATES}\n"
               f"FROM usage_records r {_where(on_records)} GROUP BY 1, 2, 3")
    summaries = f"SELECT s.* FROM monthly_usage_summaries s {_where(on_summaries)}"
    return _differences(await conn.fetch(_comparison(records, summaries), *args))


async def compare_groups(conn: asyncpg.Connection, groups: Iterable[Group]) -> list[Difference]:
    """The differences of just these (api_key_id, model, month) groups."""
    wanted = sorted(set(groups))
    if not wanted:
        return []
    return _differences(await conn.fetch(_COMPARE_GROUPS, *_arrays(wanted)))


async def repair(conn: asyncpg.Connection, scope: Scope = Scope()) -> list[Difference]:
    """Recompute the summaries that differ from usage_records; returns what was repaired.

    Safe while usage projectors run: the rewrite holds their advisory lock exclusively, so no
    batch commits between reading the records and writing the summaries. Raises
    ReconcileError (and changes nothing) if the rewritten rows still differ.
    """
    candidates = await compare(conn, scope)  # unlocked: batches keep flowing during the scan
    if not candidates:
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                           lock_key(UsageProjection.name))
        found = await compare_groups(conn, (d.group for d in candidates))
        groups = sorted({d.group for d in found})
        if not groups:
            return []  # differences that vanished meanwhile (e.g. a rebuild swapped tables)
        await conn.fetchrow(_REWRITE_GROUPS, *_arrays(groups))
        left = await compare_groups(conn, groups)
        if left:
            raise ReconcileError(f"repair left {len(left)} differences (first: {left[0]}); "
                                 "rolled back, nothing changed")
        # Delivered on commit, as a batch's NOTIFY is: these keys' spend changed.
        await notify(conn, Invalidation(
            spend_key_ids=frozenset(str(key_id) for key_id, _, _ in groups)))
    return found


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _arrays(groups: Sequence[Group]) -> tuple[list[UUID], list[str], list[date]]:
    return [g[0] for g in groups], [g[1] for g in groups], [g[2] for g in groups]


def _differences(rows: Iterable[asyncpg.Record]) -> list[Difference]:
    found: list[Difference] = []
    for row in rows:
        where = (row["api_key_id"], row["model"], row["month"])
        in_records, in_summaries = row["r_requests"] is not None, row["s_requests"] is not None
        if not (in_records and in_summaries):
            found.append(Difference(*where, ROW, row["s_requests"], row["r_requests"]))
            continue
        for column in COMPARED_COLUMNS:
            summary, records = row[f"s_{column}"], row[f"r_{column}"]
            if summary != records:  # Decimal equality ignores scale, as numeric = does
                found.append(Difference(*where, column, summary, records))
    return found

