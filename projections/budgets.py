"""Budgets in the projections: budget events, spend per scope and period, holds, alerts.

Storage module: the SQL of budgets lives here (and in migrations/0006_budgets.sql).

- The keys projection applies ``budget.set`` / ``budget.removed`` (``apply_budget_event``)
  and, when a key's budget-relevant fields change, recomputes the scopes it touches. Both
  take the usage projection's advisory lock EXCLUSIVELY (live usage batches hold it shared),
  then recompute ``budget_spend`` from ``usage_records``: a record committed before counts
  in the recompute, one committed after sees the budget and counts itself. Exactly once
  whatever the order of the two topics.
- The usage projection adds ``SPEND_CTES`` to its batch statement: each freshly claimed
  record adds its cost to the spend row of every ceiling of its key and its key's owner,
  settles the hold it carries (lease ``settled`` += estimate) and records any overrun. Then
  ``derive_alerts`` inserts the thresholds crossed (a primary key makes each one once).
- A rebuild of usage skips all of that while replaying into scratch tables and recomputes
  every scope in its swap (``recompute_all``); live leases and alerts are never replayed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg

from ledger import budgets
from ledger.events import BudgetRemoved, BudgetSet
from ledger.invalidation import Invalidation
from projections.base import lock_key

ALERT_CHANNEL = "ledger_budget_alert"

_CEILINGS = """
    SELECT scope, period, timezone, limit_usd, alert_thresholds FROM budgets
    UNION ALL
    SELECT 'key:' || id::text, 'month', 'UTC', max_budget_usd, ARRAY[50, 80, 100]
    FROM api_keys WHERE max_budget_usd IS NOT NULL
"""

def _alert_ctes(spend_rows: str) -> str:
    """CTEs that insert the thresholds crossed on ``spend_rows`` (scope, period,
    period_start, spent) into budget_alerts, once each ever; ``alerted`` is what was new."""
    return f"""
, crossed AS (
    SELECT s.scope, s.period, s.period_start, th.threshold, c.limit_usd, s.spent
    FROM {spend_rows} s
    CROSS JOIN LATERAL (
        SELECT b.limit_usd, b.alert_thresholds, b.timezone FROM budgets b
        WHERE b.scope = s.scope AND b.period = s.period
        UNION ALL
        SELECT k.max_budget_usd, ARRAY[50, 80, 100], 'UTC' FROM api_keys k
        WHERE s.scope LIKE 'key:%' AND s.period = 'month'
          AND k.id = substr(s.scope, 5)::uuid AND k.max_budget_usd IS NOT NULL
    ) AS c
    CROSS JOIN LATERAL unnest(c.alert_thresholds) AS th(threshold)
    WHERE budget_period_start(s.period, c.timezone, s.period_start) = s.period_start
      AND c.limit_usd > 0 AND s.spent >= c.limit_usd * th.threshold / 100
), alerted AS (
    INSERT INTO budget_alerts (scope, period, period_start, threshold, limit_usd, spent,
                               event_id)
    SELECT scope, period, period_start, threshold, limit_usd, spent,
           -- deterministic: a re-publication is a duplicate consumers can drop
           md5(concat_ws('|', 'budget.threshold_crossed', scope, period,
                         extract(epoch FROM period_start)::bigint, threshold))::uuid
    FROM crossed
    ON CONFLICT DO NOTHING
    RETURNING scope, period, period_start, threshold, limit_usd, spent, event_id
)"""


# One NOTIFY per new alert, delivered when the transaction commits.
_NOTIFY_ALERTS = f"""(SELECT count(pg_notify('{ALERT_CHANNEL}', json_build_object(
           'scope', scope, 'period', period, 'period_start', period_start,
           'threshold', threshold, 'limit_usd', limit_usd::text, 'spent', spent::text,
           'event_id', event_id)::text)) FROM alerted)"""

# Appended to the usage batch statement after its CTEs; reads ``claimed``. Ceilings are
# looked up for the batch's keys only (primary keys), never by scanning budgets or keys.
SPEND_CTES = """
, budget_keys AS (
    SELECT DISTINCT c.api_key_id, k.owner, k.max_budget_usd IS NOT NULL AS capped
    FROM claimed c LEFT JOIN api_keys k ON k.id = c.api_key_id
), budget_ceilings AS (
    -- UNION: two ceilings of one scope on the same spend row (a budget for the UTC month
    -- and max_budget_usd) count a record once.
    SELECT bk.api_key_id, b.scope, b.period, b.timezone
    FROM budget_keys bk JOIN budgets b ON b.scope = 'key:' || bk.api_key_id::text
    UNION
    SELECT bk.api_key_id, b.scope, b.period, b.timezone
    FROM budget_keys bk JOIN budgets b ON b.scope = 'owner:' || bk.owner
    UNION
    SELECT bk.api_key_id, 'key:' || bk.api_key_id::text, 'month', 'UTC'
    FROM budget_keys bk WHERE bk.capped
), budget_rows AS (
    SELECT DISTINCT c.event_id, b.scope, b.period,
           budget_period_start(b.period, b.timezone, c.occurred_at) AS period_start,
           c.cost_usd
    FROM claimed c JOIN budget_ceilings b ON b.api_key_id = c.api_key_id
    WHERE c.cost_usd IS NOT NULL
), budget_spent AS (
    INSERT INTO budget_spend AS s (scope, period, period_start, spent)
    SELECT scope, period, period_start, sum(cost_usd) FROM budget_rows GROUP BY 1, 2, 3
    ON CONFLICT (scope, period, period_start) DO UPDATE SET spent = s.spent + EXCLUDED.spent
    RETURNING scope, period, period_start, spent
), hold_parts AS (
    SELECT c.event_id, c.cost_usd, c.hold_estimate, lease
    FROM claimed c CROSS JOIN LATERAL unnest(c.hold_leases) AS lease
    WHERE c.hold_estimate IS NOT NULL
), holds_settled AS (
    UPDATE budget_leases l SET settled = l.settled + h.estimate
    FROM (SELECT lease, sum(hold_estimate) AS estimate FROM hold_parts GROUP BY lease) h
    WHERE l.lease_id = h.lease
    RETURNING l.lease_id
), overruns AS (
    INSERT INTO budget_overruns AS o (scope, period, period_start, overrun_usd, holds)
    SELECT l.scope, l.period, l.period_start, sum(h.cost_usd - h.hold_estimate), count(*)
    FROM hold_parts h JOIN budget_leases l ON l.lease_id = h.lease
    WHERE h.cost_usd > h.hold_estimate
    GROUP BY 1, 2, 3
    ON CONFLICT (scope, period, period_start) DO UPDATE SET
        overrun_usd = o.overrun_usd + EXCLUDED.overrun_usd, holds = o.holds + EXCLUDED.holds
    RETURNING scope
)""" + _alert_ctes("budget_spent")
SPEND_RESULT = f""",
       (SELECT count(*) FROM holds_settled) AS holds_settled,
       {_NOTIFY_ALERTS} AS alerts,
       (SELECT count(*) FROM overruns) AS overruns"""

_ALERTS = f"""
WITH touched AS (
    SELECT s.* FROM unnest($1::text[], $2::text[], $3::timestamptz[])
        AS t(scope, period, period_start)
    JOIN budget_spend s USING (scope, period, period_start)
){_alert_ctes("touched")}
SELECT {_NOTIFY_ALERTS}
"""

# Every ceiling of the given scopes, recomputed from usage_records.
_RECOMPUTE = f"""
WITH ceilings AS (
    SELECT DISTINCT scope, period, timezone FROM ({_CEILINGS}) AS c
    WHERE $1::text[] IS NULL OR scope = ANY($1::text[])
), targets AS (
    SELECT c.scope, c.period, c.timezone, k.id AS api_key_id
    FROM ceilings c JOIN api_keys k
      ON (c.scope LIKE 'key:%' AND k.id::text = substr(c.scope, 5))
      OR (c.scope LIKE 'owner:%' AND k.owner = substr(c.scope, 7))
), rows AS (
    SELECT DISTINCT r.event_id, t.scope, t.period,
           budget_period_start(t.period, t.timezone, r.occurred_at) AS period_start, r.cost_usd
    FROM targets t JOIN usage_records r ON r.api_key_id = t.api_key_id
    WHERE r.cost_usd IS NOT NULL
)
INSERT INTO budget_spend (scope, period, period_start, spent)
SELECT scope, period, period_start, sum(cost_usd) FROM rows GROUP BY 1, 2, 3
RETURNING scope, period, period_start
"""


@dataclass(frozen=True, slots=True)
class SpendMoved:
    """Spend rows a statement changed, for ``derive_alerts``."""

    scopes: list[str]
    periods: list[str]
    starts: list[datetime]


def hold_columns(hold_id: str | None) -> tuple[Decimal | None, list[UUID] | None]:
    """The staged (estimate, leases) of a usage event's hold; (None, None) if it has none.

    A hold id that is not one (a gateway bug) settles nothing; the usage still counts.
    """
    if hold_id is None:
        return None, None
    parsed = budgets.parse_hold_id(hold_id)
    if parsed is None:
        return None, None
    return parsed


async def derive_alerts(conn: asyncpg.Connection, moved: SpendMoved) -> int:
    """Insert the thresholds crossed on the moved rows (each once, ever) and NOTIFY them."""
    if not moved.scopes:
        return 0
    count: int = await conn.fetchval(_ALERTS, moved.scopes, moved.periods, moved.starts)
    return count


async def lock_out_usage(conn: asyncpg.Connection) -> None:
    """Wait for usage batches in flight and keep new ones out until this transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key("usage"))


async def recompute(conn: asyncpg.Connection, scopes: Iterable[str] | None) -> int:
    """Recompute the spend of ``scopes`` (None: every scope) from usage_records.

    The caller holds ``lock_out_usage``. Alerts for thresholds already passed are derived
    too (a budget set below what was already spent alerts at once, once).
    """
    wanted = None if scopes is None else sorted(set(scopes))
    if wanted is None:
        await conn.execute("DELETE FROM budget_spend")
    else:
        await conn.execute("DELETE FROM budget_spend WHERE scope = ANY($1::text[])", wanted)
    rows = await conn.fetch(_RECOMPUTE, wanted)
    return await derive_alerts(conn, SpendMoved(
        [r["scope"] for r in rows], [r["period"] for r in rows],
        [r["period_start"] for r in rows]))


async def apply_budget_event(
    conn: asyncpg.Connection, event: BudgetSet | BudgetRemoved
) -> Invalidation:
    await lock_out_usage(conn)
    if isinstance(event, BudgetSet):
        # An unknown time zone fails here (PostgreSQL's zone database), before any write:
        # the event becomes a dead letter naming the zone.
        await conn.execute("SELECT now() AT TIME ZONE $1", event.timezone)
        await conn.execute(
            "INSERT INTO budgets (scope, limit_usd, period, timezone, alert_thresholds, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope) DO UPDATE SET "
            "limit_usd = EXCLUDED.limit_usd, period = EXCLUDED.period, "
            "timezone = EXCLUDED.timezone, alert_thresholds = EXCLUDED.alert_thresholds, "
            "updated_at = EXCLUDED.updated_at",
            event.scope, event.limit_usd, event.period, event.timezone,
            sorted(set(event.alert_thresholds)), event.occurred_at)
    else:
        await conn.execute("DELETE FROM budgets WHERE scope = $1", event.scope)
    await recompute(conn, [event.scope])
    # Budgets are few and rarely change: every read model forgets everything.
    return Invalidation(flush_all=True)


async def owner_of(conn: asyncpg.Connection, api_key_id: UUID) -> str | None:
    owner: str | None = await conn.fetchval("SELECT owner FROM api_keys WHERE id = $1",
                                            api_key_id)
    return owner


async def recompute_keys(conn: asyncpg.Connection, api_key_ids: Iterable[UUID | str]) -> int:
    """Recompute every ceiling the keys' spend counts towards (after their costs changed)."""
    ids = sorted({str(i) for i in api_key_ids})
    if not ids:
        return 0
    owners = await conn.fetch("SELECT DISTINCT owner FROM api_keys WHERE id = ANY($1::uuid[]) "
                              "AND owner IS NOT NULL", ids)
    scopes = [*(budgets.key_scope(i) for i in ids),
              *(budgets.owner_scope(r["owner"]) for r in owners)]
    return await recompute(conn, scopes)


def key_scopes(api_key_id: UUID, *owners: str | None) -> list[str]:
    return [budgets.key_scope(api_key_id),
            *(budgets.owner_scope(owner) for owner in owners if owner is not None)]
