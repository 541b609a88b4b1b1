"""Budgets on the hot path: the ceilings of a key, their spend, and the operator's listings.

Reservations (holds out of per-process leases) are readmodels/reservations.py; this reader
finds which ceilings apply to a key (cached per key) and hands them to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from ledger import budgets
from readmodels.cache import MISSING, Cache
from readmodels.reservations import BudgetState, Ceiling, Reservations, Row, Slot

if TYPE_CHECKING:
    from readmodels.readmodels import Database

__all__ = ["Alert", "BudgetReader", "BudgetRow", "BudgetState", "Ceiling", "Slot"]


class ApiKeyLike(Protocol):
    @property
    def id(self) -> UUID: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def max_budget_usd(self) -> Decimal | None: ...


_LOAD = """SELECT scope, limit_usd, period, timezone FROM budgets WHERE scope = $1"""
_LEASE = "SELECT lease_id, amount, spent, outstanding FROM budget_lease($1, $2, $3, $4, $5, " \
    "$6, $7, $8::uuid[], $9::numeric[])"
_STATES = """
SELECT t.i, coalesce(s.spent, 0) AS spent,
       (SELECT coalesce(sum(greatest(l.amount - l.settled - l.returned, 0)), 0)
          FROM budget_leases l
         WHERE l.scope = t.scope AND l.period = t.period AND l.period_start = t.period_start
           AND l.expires_at > clock_timestamp()) AS reserved
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY
     AS t(scope, period, period_start, i)
LEFT JOIN budget_spend s
  ON s.scope = t.scope AND s.period = t.period AND s.period_start = t.period_start
ORDER BY t.i
"""
_CEILINGS = """
    SELECT scope, period, timezone, limit_usd, alert_thresholds, 'budget' AS origin
      FROM budgets
    UNION ALL
    SELECT 'key:' || id::text, 'month', 'UTC', max_budget_usd, ARRAY[50, 80, 100],
           'max_budget_usd' FROM api_keys WHERE max_budget_usd IS NOT NULL AND revoked_at IS NULL
"""
_LIST = f"""
WITH c AS (
    SELECT *, budget_period_start(period, timezone, now()) AS period_start FROM ({_CEILINGS}) x
)
SELECT c.scope, c.period, c.timezone, c.limit_usd, c.alert_thresholds, c.origin,
       c.period_start, coalesce(s.spent, 0) AS spent,
       (SELECT coalesce(sum(greatest(l.amount - l.settled - l.returned, 0)), 0)
          FROM budget_leases l
         WHERE l.scope = c.scope AND l.period = c.period AND l.period_start = c.period_start
           AND l.expires_at > clock_timestamp()) AS reserved,
       coalesce(o.overrun_usd, 0) AS overrun_usd
FROM c
LEFT JOIN budget_spend s
  ON s.scope = c.scope AND s.period = c.period AND s.period_start = c.period_start
LEFT JOIN budget_overruns o
  ON o.scope = c.scope AND o.period = c.period AND o.period_start = c.period_start
ORDER BY c.scope, c.origin
"""
_ALERTS = """SELECT scope, period, period_start, threshold, limit_usd, spent, event_id,
crossed_at, published_at FROM budget_alerts ORDER BY crossed_at, scope, threshold"""
_SCOPE_EXISTS = """SELECT CASE WHEN $1 = 'key' THEN EXISTS (SELECT 1 FROM api_keys
    WHERE id::text = $2) ELSE EXISTS (SELECT 1 FROM api_keys WHERE owner = $2) END"""


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """One line of ``ledger budgets list``."""

    scope: str
    origin: str
    period: str
    timezone: str
    limit_usd: Decimal
    alert_thresholds: tuple[int, ...]
    period_start: datetime
    spent: Decimal
    reserved: Decimal
    overrun_usd: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.limit_usd - self.spent - self.reserved

    @property
    def next_reset(self) -> datetime | None:
        return budgets.next_reset(self.period_start, self.period, self.timezone)


@dataclass(frozen=True, slots=True)
class Alert:
    scope: str
    period: str
    period_start: datetime
    threshold: int
    limit_usd: Decimal
    spent: Decimal
    event_id: UUID
    crossed_at: datetime
    published_at: datetime | None


class BudgetReader:
    """Ceilings, reservations and budget listings; reached as ``ReadModels.budgets``."""

    def __init__(self, db: Database, cache: Cache[str, Ceiling], *, hold_ttl: timedelta,
                 state_ttl: float, plan_ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._cache = cache
        self._ttl = plan_ttl  # the budget cache's TTL: a backstop, budget changes clear it
        self._state_ttl = state_ttl
        self._clock = clock
        self._plans: dict[UUID, tuple[object, float, list[Slot]]] = {}
        self._states: dict[Row, tuple[float, Decimal, Decimal]] = {}
        self.reservations = Reservations(db, hold_ttl=hold_ttl, clock=clock)
        # The hot path calls these directly.
        self.reserve = self.reservations.reserve
        self.release = self.reservations.release
        self.close = self.reservations.close

    @property
    def leases(self) -> int:
        """Round trips that leased (or tried to), in this process."""
        return self.reservations.leases

    # -- ceilings -------------------------------------------------------------------------------

    async def plan(self, key: ApiKeyLike) -> list[Slot]:
        """Every ceiling that applies to the key: its budget, its owner's, max_budget_usd.

        Cached per key object (a changed key is a new object) for the budget cache's TTL;
        budget changes clear it (``clear``).
        """
        cached = self._plans.get(key.id)
        if cached is not None and cached[0] is key and cached[1] > time.monotonic():
            return cached[2]
        found: dict[tuple[str, str, str], Ceiling] = {}
        scopes = [budgets.key_scope(key.id)]
        if key.owner is not None:
            scopes.append(budgets.owner_scope(key.owner))
        ceilings = []
        for scope in scopes:
            ceiling = self._cache.lookup(scope)
            if ceiling is MISSING:
                ceiling = await self._cache.load(scope, self._load)
            if ceiling is not None:
                ceilings.append(ceiling)
        if key.max_budget_usd is not None:
            ceilings.append(Ceiling(scopes[0], "month", "UTC", key.max_budget_usd,
                                    "max_budget_usd"))
        for ceiling in ceilings:
            # Two ceilings on one spend row (a budget for the UTC month and max_budget_usd):
            # the lower limit is the one that can bind.
            same = (ceiling.scope, ceiling.period, ceiling.timezone)
            if same not in found or ceiling.limit_usd < found[same].limit_usd:
                found[same] = ceiling
        slots = [Slot(c) for c in found.values()]
        if len(self._plans) > 4 * self._cache.maxsize:
            self._plans.clear()
        self._plans[key.id] = (key, time.monotonic() + self._ttl, slots)
        return slots

    async def _load(self, scope: str) -> Ceiling | None:
        row = await self._db.fetchrow("load budget", _LOAD, scope)
        if row is None:
            return None
        return Ceiling(row["scope"], row["period"], row["timezone"], row["limit_usd"])

    # -- reservations ---------------------------------------------------------------------------

    # -- without an estimate: best effort ---------------------------------------------------------

    async def states(self, slots: list[Slot]) -> list[BudgetState]:
        """Settled spend and open holds of each ceiling (cached briefly, evicted on spend)."""
        now = self._clock()
        ceilings = [slot.ceiling for slot in slots]
        rows = [slot.row_at(now) for slot in slots]
        clock = time.monotonic()
        missing = [r for r in rows if (s := self._states.get(r)) is None or s[0] <= clock]
        if missing:
            fetched = await self._db.fetch(
                "read budget spend", _STATES, [r[0] for r in missing], [r[1] for r in missing],
                [r[2] for r in missing])
            for row, record in zip(missing, fetched, strict=True):
                self._states[row] = (clock + self._state_ttl, record["spent"], record["reserved"])
        return [BudgetState(c.scope, c.period, c.limit_usd, self._states[r][1],
                            self._states[r][2]) for c, r in zip(ceilings, rows, strict=True)]

    def spend_moved(self) -> None:
        self._states.clear()

    def clear(self) -> None:
        self._cache.clear()
        self._plans.clear()
        self._states.clear()

    # -- operator reads ---------------------------------------------------------------------------

    async def rows(self) -> list[BudgetRow]:
        rows = await self._db.fetch("list budgets", _LIST)
        return [BudgetRow(r["scope"], r["origin"], r["period"], r["timezone"], r["limit_usd"],
                          tuple(r["alert_thresholds"]), r["period_start"], r["spent"],
                          r["reserved"], r["overrun_usd"]) for r in rows]

    async def alerts(self) -> list[Alert]:
        rows = await self._db.fetch("list budget alerts", _ALERTS)
        return [Alert(**dict(r)) for r in rows]

    async def scope_exists(self, scope: str) -> bool:
        """Whether the scope names a key or an owner of one."""
        kind, value = budgets.parse_scope(scope)
        exists: bool = await self._db.fetchval("check budget scope", _SCOPE_EXISTS, kind, value)
        return exists
