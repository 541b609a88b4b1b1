"""Re-pricing: usage priced from the catalog follows the catalog, whenever the catalog arrives.

The price of a usage event without ``cost_usd`` is a function of the event and the catalog:
its model resolved by ``ledger.catalog.naming``, then that model's price-history entry valid
at ``occurred_at``. The usage and catalog projections advance on their own consumer groups,
so usage can be projected before the catalog knows its model, an alias, or a price that was
valid at its time (an import with a ``valid_from`` in the past). A rebuild of the usage
projection replays the usage log against the finished catalog; the live tables must come
out the same.

So every catalog batch that changes a name or a price history re-prices, in the same
transaction, the usage rows the change can reach: their cost, ``cost_source`` and the monthly
summaries' ``cost_usd`` and ``unpriced_requests`` move together, each change is logged in
``usage_repricings`` with the old and the new cost, and the keys whose spend moved are
NOTIFYed. ``ledger status`` and ``ledger_projector_repriced_total`` show how many.

Which rows a change can reach (a superset: each is priced again and only differences are
written):

* a price-history row for model ``M`` valid from ``V``: rows whose name resolves to ``M`` now
  and that happened at or after ``V``;
* a name change (a new model, a model whose provider or ``alias_of`` status changed, an alias
  set or removed): rows whose name, or the part after its provider prefix, is that name in
  any case, or resolves to it now, whenever they happened. A model's aliases count as its
  names (``openai/my-alias`` reaches a model through its alias).

No race: a usage batch holds the usage projection's advisory lock shared from before it
prices until it commits; the re-pricing takes it exclusively, so it sees every batch that
priced against the old catalog, and every later batch sees the new one. A usage rebuild
holds ``PRICING_LOCK`` shared while it replays, so catalog changes wait for its swap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from ledger.catalog.naming import fold, resolve_in_db, split
from ledger.events import UsageRecorded
from ledger.invalidation import Invalidation
from projections import budgets
from projections.base import lock_key
from projections.exceptions import RepricingError
from projections.pricer import CatalogPricer

log = logging.getLogger("ledger.projector")

# Held exclusively by a catalog batch that re-prices, shared by a usage rebuild's replay.
PRICING_LOCK = "ledger.pricing"
_USAGE = "usage"

# Every distinct usage_records.model, one index probe per name (a loose index scan of
# usage_records_model_time), however many rows each name has.
_NAMES = """
WITH RECURSIVE names (model) AS (
    (SELECT model FROM usage_records ORDER BY model LIMIT 1)
    UNION ALL
    SELECT (SELECT u.model FROM usage_records u WHERE u.model > n.model
             ORDER BY u.model LIMIT 1)
      FROM names n WHERE n.model IS NOT NULL
)
SELECT model FROM names WHERE model IS NOT NULL
"""
# Rows priced from the catalog (or not at all) under these names, from these moments on.
_REACHED = """
SELECT u.* FROM unnest($1::text[], $2::timestamptz[]) AS w (model, since)
  JOIN usage_records u
    ON u.model = w.model AND u.occurred_at >= coalesce(w.since, '-infinity'::timestamptz)
 WHERE u.cost_source <> 'emitter'
"""
_MONTH = "(date_trunc('month', occurred_at AT TIME ZONE 'UTC'))::date"
# $1..$8: event_id, occurred_at, api_key_id, model, old cost, old source, new cost, new source
_WRITE = f"""
WITH changed AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[],
                         $5::numeric[], $6::text[], $7::numeric[], $8::text[])
        AS c (event_id, occurred_at, api_key_id, model, old_cost_usd, old_cost_source,
              new_cost_usd, new_cost_source)
), updated AS (
    UPDATE usage_records u SET cost_usd = c.new_cost_usd, cost_source = c.new_cost_source
      FROM changed c
     WHERE u.event_id = c.event_id AND u.occurred_at = c.occurred_at
    RETURNING c.*
), deltas AS (
    SELECT api_key_id, model, {_MONTH} AS month,
           sum(coalesce(new_cost_usd, 0) - coalesce(old_cost_usd, 0)) AS cost_usd,
           count(*) FILTER (WHERE new_cost_source = 'unpriced')
             - count(*) FILTER (WHERE old_cost_source = 'unpriced') AS unpriced_requests
      FROM updated GROUP BY 1, 2, 3
), summed AS (
    UPDATE monthly_usage_summaries s
       SET cost_usd = s.cost_usd + d.cost_usd,
           unpriced_requests = s.unpriced_requests + d.unpriced_requests,
           updated_at = now()
      FROM deltas d
     WHERE s.api_key_id = d.api_key_id AND s.month = d.month AND s.model = d.model
    RETURNING 1
), logged AS (
    INSERT INTO usage_repricings (event_id, occurred_at, api_key_id, model, old_cost_usd,
                                  old_cost_source, new_cost_usd, new_cost_source)
    SELECT event_id, occurred_at, api_key_id, model, old_cost_usd, old_cost_source,
           new_cost_usd, new_cost_source FROM updated
    RETURNING 1
)
SELECT (SELECT count(*) FROM updated) AS updated, (SELECT count(*) FROM deltas) AS groups,
       (SELECT count(*) FROM summed) AS summed, (SELECT count(*) FROM logged) AS logged
"""


@dataclass
class PricingChanges:
    """What a catalog batch changed that prices depend on: name -> since when (None: always)."""

    since: dict[str, datetime | None] = field(default_factory=dict)

    def name(self, *names: str) -> None:
        """These names may now designate another model (or none): every moment is reached."""
        for name in names:
            self.since[name] = None

    def price(self, model: str, valid_from: datetime) -> None:
        """``model`` has a price-history entry from ``valid_from`` on."""
        if model in self.since:
            current = self.since[model]
            self.since[model] = None if current is None else min(current, valid_from)
        else:
            self.since[model] = valid_from

    def __bool__(self) -> bool:
        return bool(self.since)


@dataclass(frozen=True, slots=True)
class Repriced:
    events: int
    net_usd: Decimal
    invalidation: Invalidation


class Repricer:
    def __init__(self) -> None:
        self._pricer = CatalogPricer()

    async def reprice(self, conn: asyncpg.Connection, changes: PricingChanges) -> Repriced:
        """Re-price what ``changes`` reach, in the caller's transaction (the catalog batch's)."""
        nothing = Repriced(0, Decimal(0), Invalidation())
        if not changes:
            return nothing
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", PRICING_LOCK)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key(_USAGE))
        names = [row["model"] for row in await conn.fetch(_NAMES)]
        resolved, _ = await resolve_in_db(conn, names)
        reached = _reached(changes.since, {n: r.model if r else None for n, r in resolved.items()})
        if not reached:
            return nothing
        rows = await conn.fetch(_REACHED, list(reached), list(reached.values()))
        costs = await self._pricer.costs(conn, [_event(row) for row in rows])
        changed = []
        for row, cost in zip(rows, costs, strict=True):
            if isinstance(cost, Exception):
                log.warning("re-pricing %s failed (%s); it is unpriced now", row["event_id"], cost)
                cost = (None, "unpriced")
            if cost != (row["cost_usd"], row["cost_source"]):
                changed.append((row, cost))
        if not changed:
            return nothing
        result = await conn.fetchrow(_WRITE, *_columns(changed))
        assert result is not None
        if not result["updated"] == result["logged"] == len(changed):
            # The rows were read under the exclusive lock: nothing may have moved them.
            raise RepricingError(f"re-pricing {len(changed)} usage events updated "
                                 f"{result['updated']} records; rolled back")
        if result["summed"] != result["groups"]:
            # A summary row that its records lack is already a reconcile difference; the
            # repair recomputes it from the records, new costs included.
            log.warning("re-pricing: %d of %d monthly summaries to adjust are missing; run "
                        "`ledger reconcile --repair`", result["groups"] - result["summed"],
                        result["groups"])
        net = sum((Decimal(c[0] or 0) - Decimal(r["cost_usd"] or 0) for r, c in changed),
                  Decimal(0))
        log.info("catalog change re-priced %d usage events (net %s USD)", len(changed), net)
        keys = frozenset(str(row["api_key_id"]) for row, _ in changed)
        # Under the usage lock taken above: budget spend follows the new costs.
        await budgets.recompute_keys(conn, keys)
        return Repriced(len(changed), net, Invalidation(spend_key_ids=keys))


def _reached(
    changes: Mapping[str, datetime | None], resolved: Mapping[str, str | None]
) -> dict[str, datetime | None]:
    """Usage names a change can reach -> the first moment reached (None: every moment)."""
    by_fold: dict[str, list[str]] = {}
    for changed in changes:
        by_fold.setdefault(fold(changed), []).append(changed)
    reached: dict[str, datetime | None] = {}
    for name, model in resolved.items():
        prefixed = split(name)
        spelled = {fold(name), *([fold(prefixed[1])] if prefixed else [])}
        hits = {c for key in spelled for c in by_fold.get(key, ())}
        if model is not None and model in changes:
            hits.add(model)
        if hits:
            moments = [changes[c] for c in hits]
            reached[name] = None if any(m is None for m in moments) else min(
                m for m in moments if m is not None)
    return reached


_EVENT_FIELDS = frozenset(UsageRecorded.model_fields) - {"cost_usd", "type", "schema_version"}


def _event(row: asyncpg.Record) -> UsageRecorded:
    """The usage event a record was projected from, as far as pricing reads it.

    Every column named like an event field is carried over, so a pricing input the event
    gains (with its column) is priced here exactly as the projector priced it.
    """
    values: dict[str, Any] = {k: v for k, v in row.items() if k in _EVENT_FIELDS}
    if isinstance(values.get("metadata"), str):
        values["metadata"] = json.loads(values["metadata"])
    return UsageRecorded.model_construct(**values, cost_usd=None)


def _columns(
    changed: Iterable[tuple[asyncpg.Record, tuple[Decimal | None, str]]],
) -> tuple[list[Any], ...]:
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
    for row, (cost, source) in changed:
        for column, value in zip(columns, (
                row["event_id"], row["occurred_at"], row["api_key_id"], row["model"],
                row["cost_usd"], row["cost_source"], cost, source), strict=True):
            column.append(value)
    return columns
