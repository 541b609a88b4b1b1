"""Budgets on the hot path: the ceilings of a key, reservations (holds) held by leases.

A reservation must not cost a database round trip per request while budget is plentiful,
and must hold across every gateway process. So each process leases an allowance per ceiling
(scope, period) from PostgreSQL (``budget_lease`` in migrations/0006_budgets.sql: one
round trip that admits the lease only if spent + live leases + amount <= limit) and hands
holds out of it in memory. A lease is about LEASE_REQUESTS estimates far from the cap and
shrinks to an eighth of the headroom near it, down to the one estimate: per-request
reservation, so little budget sits idle in other processes near the cap. What a process
leased and did not hand out goes back when it leases again, on ``close()``, or when the
lease expires (2 x BUDGET_HOLD_TTL; holds are handed out only in the first TTL of a lease,
so every hold lives at least BUDGET_HOLD_TTL). docs/budgets.md has the guarantee.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final
from uuid import UUID

from ledger import budgets
from readmodels.cache import MISSING, Cache

if TYPE_CHECKING:
    from readmodels.readmodels import Database

LEASE_REQUESTS: Final = 256  # estimates per lease far from the cap (see bench/budgets.py)
_HOLD_PRUNE_AT: Final = 100_000  # holds remembered for release() before pruning old ones

_LOAD = """SELECT scope, limit_usd, period, timezone FROM budgets WHERE scope = $1"""
_LEASE = "SELECT lease_id, amount, spent, outstanding FROM budget_lease($1, $2, $3, $4, $5, " \
    "$6, $7, $8, $9)"
_GIVE_BACK = """UPDATE budget_leases l SET returned = l.returned + g.amount
FROM unnest($1::uuid[], $2::numeric[]) AS g(lease_id, amount) WHERE l.lease_id = g.lease_id"""
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
class Ceiling:
    """One limit that applies to a request: a budget, or a key's ``max_budget_usd``."""

    scope: str
    period: str
    timezone: str
    limit_usd: Decimal
    origin: str = "budget"  # or "max_budget_usd"


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A ceiling as a decision names it: the binding one, or the one that refused."""

    scope: str
    period: str
    limit_usd: Decimal
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.limit_usd - self.spent - self.reserved


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


Row = tuple[str, str, datetime]  # (scope, period, period_start): one spend row


class _Allowance:
    """What this process may still hand out of one lease."""

    __slots__ = ("ceiling", "free", "lease_id", "limit_usd", "outstanding", "row", "spent",
                 "usable_until")

    def __init__(self, lease_id: UUID, row: Row, ceiling: Ceiling, amount: Decimal,
                 spent: Decimal, outstanding: Decimal, usable_until: float) -> None:
        self.lease_id = lease_id
        self.row = row
        self.ceiling = ceiling
        self.free = amount
        self.spent = spent  # as seen when leased: for naming the binding ceiling
        self.outstanding = outstanding
        self.limit_usd = ceiling.limit_usd
        self.usable_until = usable_until


def _now() -> datetime:
    return datetime.now(UTC)


class BudgetReader:
    """Ceilings, reservations and budget listings; reached as ``ReadModels.budgets``."""

    def __init__(self, db: Database, cache: Cache[str, Ceiling], *, hold_ttl: timedelta,
                 state_ttl: float, clock: Callable[[], datetime] = _now) -> None:
        self._db = db
        self._cache = cache
        self._hold_ttl = hold_ttl.total_seconds()
        self._lease_ttl = 2 * hold_ttl
        self._state_ttl = state_ttl
        self._clock = clock
        self._allowances: dict[Row, _Allowance] = {}
        self._locks: dict[Row, asyncio.Lock] = {}
        self._holds: dict[str, tuple[float, Decimal, list[_Allowance]]] = {}
        # Hold ids released here, until their leases expire: a second release is refused
        # rather than handing the amount back twice.
        self._released: dict[str, float] = {}
        self._states: dict[Row, tuple[float, Decimal, Decimal]] = {}
        self.leases = 0  # round trips that leased (or tried to)

    # -- ceilings -------------------------------------------------------------------------------

    async def ceilings(self, key_id: UUID, owner: str | None,
                       max_budget_usd: Decimal | None) -> list[Ceiling]:
        """Every ceiling that applies to the key: its budget, its owner's, max_budget_usd."""
        found = []
        scopes = [budgets.key_scope(key_id)]
        if owner is not None:
            scopes.append(budgets.owner_scope(owner))
        for scope in scopes:
            ceiling = self._cache.lookup(scope)
            if ceiling is MISSING:
                ceiling = await self._cache.load(scope, self._load)
            if ceiling is not None:
                found.append(ceiling)
        if max_budget_usd is not None:
            found.append(Ceiling(scopes[0], "month", "UTC", max_budget_usd, "max_budget_usd"))
        return found

    async def _load(self, scope: str) -> Ceiling | None:
        row = await self._db.fetchrow("load budget", _LOAD, scope)
        if row is None:
            return None
        return Ceiling(row["scope"], row["period"], row["timezone"], row["limit_usd"])

    def _row(self, ceiling: Ceiling, now: datetime) -> Row:
        return (ceiling.scope, ceiling.period,
                budgets.period_start(now, ceiling.period, ceiling.timezone))

    # -- reservations ---------------------------------------------------------------------------

    async def reserve(self, ceilings: list[Ceiling], estimate: Decimal
                      ) -> tuple[str | None, BudgetState]:
        """A hold of ``estimate`` on every ceiling: (hold_id, binding) or (None, refusing)."""
        now = self._clock()
        taken: list[_Allowance] = []
        for ceiling in ceilings:
            allowance = await self._take(ceiling, self._row(ceiling, now), estimate)
            if isinstance(allowance, BudgetState):
                for earlier in taken:
                    self._give(earlier, estimate)
                return None, allowance
            taken.append(allowance)
        hold = budgets.hold_id(estimate, [a.lease_id for a in taken])
        if len(self._holds) >= _HOLD_PRUNE_AT:
            self._prune_holds()
        self._holds[hold] = (time.monotonic() + self._hold_ttl, estimate, taken)
        binding = min(taken, key=lambda a: a.limit_usd - a.spent - a.outstanding)
        return hold, BudgetState(binding.ceiling.scope, binding.ceiling.period, binding.limit_usd,
                                 binding.spent, binding.outstanding)

    async def _take(self, ceiling: Ceiling, row: Row, estimate: Decimal
                    ) -> _Allowance | BudgetState:
        while True:
            current = self._allowances.get(row)
            # No await between this check and the deduction: atomic within the process.
            if (current is not None and current.free >= estimate
                    and current.limit_usd == ceiling.limit_usd
                    and time.monotonic() < current.usable_until):
                current.free -= estimate
                return current
            lock = self._locks.setdefault(row, asyncio.Lock())
            async with lock:
                current = self._allowances.get(row)
                if (current is not None and current.free >= estimate
                        and current.limit_usd == ceiling.limit_usd
                        and time.monotonic() < current.usable_until):
                    continue  # another caller leased meanwhile
                refused = await self._lease(ceiling, row, estimate, current)
                if refused is not None:
                    return refused

    async def _lease(self, ceiling: Ceiling, row: Row, estimate: Decimal,
                     current: _Allowance | None) -> BudgetState | None:
        give_back = current.free if current is not None else Decimal(0)
        if current is not None:
            current.free = Decimal(0)  # nothing more from it while the trip is under way
        self.leases += 1
        try:
            result = await self._db.fetchrow(
                "lease budget", _LEASE, row[0], row[1], row[2], ceiling.limit_usd, estimate,
                estimate * LEASE_REQUESTS, self._lease_ttl,
                current.lease_id if current is not None else None, give_back)
        except BaseException:
            if current is not None:
                current.free += give_back
            raise
        assert result is not None
        if current is not None:
            self._allowances.pop(row, None)
        if result["lease_id"] is None:
            return BudgetState(ceiling.scope, ceiling.period, ceiling.limit_usd,
                               result["spent"], result["outstanding"])
        self._allowances[row] = _Allowance(
            result["lease_id"], row, ceiling, result["amount"], result["spent"],
            result["outstanding"], time.monotonic() + self._hold_ttl)
        return None

    def _give(self, allowance: _Allowance, amount: Decimal) -> bool:
        """Back into the allowance if it is still the one in use; False otherwise."""
        if self._allowances.get(allowance.row) is allowance:
            allowance.free += amount
            return True
        return False

    async def release(self, hold_id: str) -> bool:
        """Give a hold back (the call produced no usage). False if not a hold id or already
        released by this process. Never release a hold whose usage was emitted: the
        projector settles that one, and both would give the amount back.

        A hold from this process goes back into its allowance (no round trip) or, if that
        lease was replaced meanwhile, to the lease in PostgreSQL. A hold from another
        process (its id says which leases) goes to its leases in PostgreSQL.
        """
        if hold_id in self._released:
            return False
        known = self._holds.pop(hold_id, None)
        if len(self._released) >= _HOLD_PRUNE_AT:
            self._prune_holds()
        self._released[hold_id] = time.monotonic() + 2 * self._hold_ttl
        if known is not None:
            _, estimate, taken = known
            stale = [a.lease_id for a in taken if not self._give(a, estimate)]
            if stale:
                await self._db.fetchval("release hold", _GIVE_BACK, stale,
                                        [estimate] * len(stale))
            return True
        parsed = budgets.parse_hold_id(hold_id)
        if parsed is None:
            del self._released[hold_id]
            return False
        estimate, leases = parsed
        await self._db.fetchval("release hold", _GIVE_BACK, leases, [estimate] * len(leases))
        return True

    def _prune_holds(self) -> None:
        now = time.monotonic()
        self._holds = {h: v for h, v in self._holds.items() if v[0] > now}
        self._released = {h: until for h, until in self._released.items() if until > now}

    async def close(self) -> None:
        """Give back what this process leased and did not hand out."""
        unused = [(a.lease_id, a.free) for a in self._allowances.values() if a.free > 0]
        self._allowances.clear()
        if unused:
            await self._db.fetchval("give back leases", _GIVE_BACK,
                                    [u[0] for u in unused], [u[1] for u in unused])

    # -- without an estimate: best effort ---------------------------------------------------------

    async def states(self, ceilings: list[Ceiling]) -> list[BudgetState]:
        """Settled spend and open holds of each ceiling (cached briefly, evicted on spend)."""
        now = self._clock()
        rows = [self._row(c, now) for c in ceilings]
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
