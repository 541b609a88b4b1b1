"""Reservations: holds handed out of per-process leases, so a request costs no round trip.

A reservation must not cost a database round trip per request while budget is plentiful,
and must hold across every gateway process. So each process leases an allowance per ceiling
(scope, period) from PostgreSQL (``budget_lease`` in migrations/0006_budgets.sql: one
round trip that admits the lease only if spent + live leases + amount <= limit) and hands
holds out of it in memory. A lease is about LEASE_REQUESTS estimates far from the cap
(the next one prefetched in the background when a quarter is left) and shrinks to an eighth
of the headroom near it, down to the one estimate: per-request reservation, so little budget
sits idle in other processes near the cap. What a process leased and did not hand out goes
back with its next lease, on ``close()``, or when the lease expires (2 x BUDGET_HOLD_TTL;
holds are handed out only in the first TTL of a lease, so every hold lives at least
BUDGET_HOLD_TTL). docs/budgets.md has the guarantee and the trade-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final
from uuid import UUID

from ledger import budgets
from readmodels.exceptions import ReadModelsClosedError

if TYPE_CHECKING:
    from readmodels.readmodels import Database

log = logging.getLogger("readmodels.budgets")

LEASE_REQUESTS: Final = 256  # estimates per lease far from the cap (see bench/budgets.py)
_RELEASED_PRUNE_AT: Final = 100_000  # released hold ids remembered before pruning old ones

_LEASE = "SELECT lease_id, amount, spent, outstanding FROM budget_lease($1, $2, $3, $4, $5, " \
    "$6, $7, $8::uuid[], $9::numeric[])"
_GIVE_BACK = """UPDATE budget_leases l SET returned = l.returned + g.amount
FROM unnest($1::uuid[], $2::numeric[]) AS g(lease_id, amount) WHERE l.lease_id = g.lease_id"""


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



Row = tuple[str, str, datetime]  # (scope, period, period_start): one spend row


class _Allowance:
    """What this process may still hand out of one lease."""

    __slots__ = ("free", "lease_id", "limit_usd", "prefetch", "refill", "refilling", "row",
                 "spare", "state", "suffix", "usable_until")

    def __init__(self, lease_id: UUID, row: Row, ceiling: Ceiling, amount: Decimal,
                 state: BudgetState, usable_until: float, prefetch: bool) -> None:
        self.lease_id = lease_id
        self.suffix = f"_{lease_id.hex}"  # its part of a hold id
        self.row = row
        self.free = amount
        self.limit_usd = ceiling.limit_usd
        self.state = state  # as seen when leased: names the binding ceiling
        self.usable_until = usable_until
        # Far from the cap (the lease got all it asked for), the next lease is taken in the
        # background when a quarter is left, so no request waits for it.
        self.prefetch = amount / 4 if prefetch else None
        self.refilling = False
        # Resolved when the prefetch of the next lease has ended (leased or not).
        self.refill: asyncio.Future[None] | None = None
        self.spare: _Allowance | None = None


class Slot:
    """One ceiling of one key, with the spend row of its current period."""

    __slots__ = ("ceiling", "ends", "row", "starts")

    def __init__(self, ceiling: Ceiling) -> None:
        self.ceiling = ceiling
        self.row: Row = (ceiling.scope, ceiling.period, budgets.TOTAL_START)
        self.starts = self.ends = 0.0  # the period as epoch seconds: none computed yet

    def row_at(self, now: float) -> Row:
        if not self.starts <= now < self.ends:
            ceiling = self.ceiling
            start = budgets.period_start(datetime.fromtimestamp(now, UTC), ceiling.period,
                                         ceiling.timezone)
            end = budgets.next_reset(start, ceiling.period, ceiling.timezone)
            self.row = (ceiling.scope, ceiling.period, start)
            self.starts = start.timestamp()
            self.ends = float("inf") if end is None else end.timestamp()
        return self.row



class Reservations:
    """The leases and holds of one process; reached as ``ReadModels.budgets.reservations``."""

    def __init__(self, db: Database, *, hold_ttl: timedelta,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._hold_ttl = hold_ttl.total_seconds()
        self._lease_ttl = 2 * hold_ttl
        self._clock = clock
        self._allowances: dict[Row, _Allowance] = {}
        self._by_lease: dict[UUID, _Allowance] = {}
        self._locks: dict[Row, asyncio.Lock] = {}
        self._give_back: list[tuple[UUID, Decimal]] = []  # leftovers of exhausted leases
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # Hold ids released here, until their leases expire: a second release is refused
        # rather than handing the amount back twice.
        self._released: dict[str, float] = {}
        self.leases = 0  # round trips that leased (or tried to)

    async def reserve(self, slots: list[Slot], estimate: Decimal
                      ) -> tuple[str | None, BudgetState]:
        """A hold of ``estimate`` on every ceiling: (hold_id, binding) or (None, refusing)."""
        now = self._clock()
        taken: list[_Allowance] = []
        for slot in slots:
            row = slot.row_at(now)
            current = self._allowances.get(row)
            # No await between this check and the deduction: atomic within the process.
            if (current is not None and current.free >= estimate
                    and current.limit_usd == slot.ceiling.limit_usd
                    and time.monotonic() < current.usable_until):
                current.free -= estimate
                if (current.prefetch is not None and current.free < current.prefetch
                        and not current.refilling):
                    self._refill(slot, row, current, estimate)
                taken.append(current)
                continue
            allowance = await self._take(slot.ceiling, row, estimate)
            if isinstance(allowance, BudgetState):
                for earlier in taken:
                    await self._give(earlier, estimate)
                return None, allowance
            taken.append(allowance)
        # ledger.budgets.hold_id, written out: this is the hot path (one ceiling is the rule)
        if len(taken) == 1:
            return f"h1_{estimate:f}{taken[0].suffix}", taken[0].state
        binding = min(taken, key=lambda a: a.state.remaining)
        return f"h1_{estimate:f}" + "".join(a.suffix for a in taken), binding.state

    def _usable(self, allowance: _Allowance | None, ceiling: Ceiling, estimate: Decimal) -> bool:
        return (allowance is not None and allowance.free >= estimate
                and allowance.limit_usd == ceiling.limit_usd
                and time.monotonic() < allowance.usable_until)

    async def _take(self, ceiling: Ceiling, row: Row, estimate: Decimal
                    ) -> _Allowance | BudgetState:
        while True:
            if self._closing:  # woken by close(): nothing more is leased
                raise ReadModelsClosedError("the read models are closing")
            current = self._allowances.get(row)
            if current is not None and self._usable(current.spare, ceiling, estimate):
                self._promote(row, current)
                continue
            if current is not None and current.refill is not None and not current.refill.done():
                await asyncio.shield(current.refill)  # the next lease is on its way
                continue
            if self._usable(current, ceiling, estimate):
                assert current is not None
                current.free -= estimate
                return current
            lock = self._locks.setdefault(row, asyncio.Lock())
            async with lock:
                current = self._allowances.get(row)
                if self._usable(current, ceiling, estimate) or (
                        current is not None and self._usable(current.spare, ceiling, estimate)):
                    continue  # another caller leased meanwhile
                refused = await self._lease(ceiling, row, estimate, current)
                if refused is not None:
                    return refused

    def _promote(self, row: Row, current: _Allowance) -> None:
        """The prefetched lease takes over; what is left of the old one goes back later."""
        spare = current.spare
        assert spare is not None
        current.spare = None
        if current.free > 0:
            self._give_back.append((current.lease_id, current.free))
            current.free = Decimal(0)
        self._by_lease.pop(current.lease_id, None)
        self._allowances[row] = spare

    async def _call_lease(self, ceiling: Ceiling, row: Row, estimate: Decimal,
                          give_back: _Allowance | None, amount: Decimal
                          ) -> tuple[_Allowance | None, BudgetState]:
        """One round trip: give back ``amount`` of ``give_back`` and every pending leftover,
        and lease."""
        pending, self._give_back = self._give_back, []
        if give_back is not None and amount > 0:
            pending.append((give_back.lease_id, amount))
        self.leases += 1
        try:
            result = await self._db.fetchrow(
                "lease budget", _LEASE, row[0], row[1], row[2], ceiling.limit_usd, estimate,
                estimate * LEASE_REQUESTS, self._lease_ttl, [p[0] for p in pending],
                [p[1] for p in pending])
        except BaseException:
            self._give_back.extend(p for p in pending if give_back is None
                                   or p[0] != give_back.lease_id)
            raise
        assert result is not None
        state = BudgetState(ceiling.scope, ceiling.period, ceiling.limit_usd, result["spent"],
                            result["outstanding"])
        if result["lease_id"] is None:
            return None, state
        allowance = _Allowance(
            result["lease_id"], row, ceiling, result["amount"], state,
            time.monotonic() + self._hold_ttl,
            prefetch=result["amount"] >= estimate * LEASE_REQUESTS and LEASE_REQUESTS > 1)
        return allowance, state

    async def _lease(self, ceiling: Ceiling, row: Row, estimate: Decimal,
                     current: _Allowance | None) -> BudgetState | None:
        """Lease for ``row``, giving back what is left of ``current``; the refusal, or None
        when there is an allowance to take from now."""
        give_back = current.free if current is not None else Decimal(0)
        if current is not None:
            current.free = Decimal(0)  # nothing more from it while the trip is under way
        try:
            allowance, state = await self._call_lease(ceiling, row, estimate, current, give_back)
        except BaseException:
            if current is not None:
                current.free += give_back
            raise
        if self._closing:  # close() ran during the round trip: what it leased goes back now
            if allowance is not None:
                self._give_back.append((allowance.lease_id, allowance.free))
            await self._flush_give_back()
            raise ReadModelsClosedError("the read models closed while leasing")
        installed = self._allowances.get(row)
        if current is not None and installed is current:
            del self._allowances[row]
            self._by_lease.pop(current.lease_id, None)
            spare, current.spare = current.spare, None
            if spare is not None:  # prefetched for another limit, or expired: not used
                self._by_lease.pop(spare.lease_id, None)
                self._give_back.append((spare.lease_id, spare.free))
            installed = None
        if installed is not None:
            # A prefetched lease took over while we were away: it serves; ours is spare.
            if allowance is not None:
                if installed.spare is None:
                    installed.spare = allowance
                    self._by_lease[allowance.lease_id] = allowance
                else:
                    self._give_back.append((allowance.lease_id, allowance.free))
            return None
        if allowance is None:
            return state
        self._allowances[row] = allowance
        self._by_lease[allowance.lease_id] = allowance
        return None

    def _refill(self, slot: Slot, row: Row, current: _Allowance, estimate: Decimal) -> None:
        """Prefetch the next lease, from a task started on the loop's next turn: the request
        that crosses the prefetch point only schedules it. Creating the task on its path
        cost that request 15-25 us here (a callback costs 1), and made it the slowest
        hundredth of requests on a key with a budget (bench/litellm_callback.py)."""
        current.refilling = True
        loop = asyncio.get_running_loop()
        current.refill = loop.create_future()
        loop.call_soon(self._start_prefetch, slot.ceiling, row, current, estimate)

    def _start_prefetch(self, ceiling: Ceiling, row: Row, current: _Allowance,
                        estimate: Decimal) -> None:
        if self._closing:  # close() gives back what is leased; nothing more is asked for
            current.refilling = False
            _resolve(current.refill)
            return
        task = asyncio.get_running_loop().create_task(
            self._prefetch(ceiling, row, current, estimate))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Waiters in _take go on when the task ends, whatever became of it: cancelled before
        # its first step (close()) included, when nothing in its body runs.
        waited = current.refill
        task.add_done_callback(lambda _ended: _resolve(waited))

    async def _prefetch(self, ceiling: Ceiling, row: Row, current: _Allowance,
                        estimate: Decimal) -> None:
        try:
            spare, _ = await self._call_lease(ceiling, row, estimate, None, Decimal(0))
        except Exception as exc:  # the request path leases for itself then
            log.warning("budget lease prefetch failed: %s", exc)
            current.refilling = False
            return
        if spare is None:
            return  # near the cap now: requests lease for themselves, per request
        if self._allowances.get(row) is current and current.spare is None:
            current.spare = spare
            self._by_lease[spare.lease_id] = spare
        else:
            self._give_back.append((spare.lease_id, spare.free))

    async def _flush_give_back(self) -> None:
        pending, self._give_back = self._give_back, []
        if pending:
            try:
                await self._db.fetchval("give back leases", _GIVE_BACK,
                                        [p[0] for p in pending], [p[1] for p in pending])
            except BaseException:
                self._give_back.extend(pending)
                raise

    async def _give(self, allowance: _Allowance, amount: Decimal) -> None:
        """Back into the allowance while it is in use here; to its lease in the database
        otherwise."""
        current = self._allowances.get(allowance.row)
        if current is not None and (current is allowance or current.spare is allowance):
            allowance.free += amount
        else:
            await self._db.fetchval("release hold", _GIVE_BACK, [allowance.lease_id], [amount])

    async def release(self, hold_id: str) -> bool:
        """Give a hold back (the call produced no usage). False if not a hold id or already
        released by this process. Never release a hold whose usage was emitted: the
        projector settles that one, and both would give the amount back.

        The id says which leases the hold came from: a lease this process still hands out
        of takes it back in memory, any other (replaced, or another process's) in
        PostgreSQL.
        """
        parsed = budgets.parse_hold_id(hold_id)
        if parsed is None or hold_id in self._released:
            return False
        if len(self._released) >= _RELEASED_PRUNE_AT:
            self._prune_holds()
        self._released[hold_id] = time.monotonic() + 2 * self._hold_ttl
        estimate, leases = parsed
        elsewhere = []
        for lease in leases:
            allowance = self._by_lease.get(lease)
            current = None if allowance is None else self._allowances.get(allowance.row)
            if allowance is not None and current is not None and (
                    current is allowance or current.spare is allowance):
                allowance.free += estimate
            else:
                elsewhere.append(lease)
        if elsewhere:
            await self._db.fetchval("release hold", _GIVE_BACK, elsewhere,
                                    [estimate] * len(elsewhere))
        return True

    def _prune_holds(self) -> None:
        now = time.monotonic()
        self._released = {h: until for h, until in self._released.items() if until > now}

    async def close(self) -> None:
        """Give back what this process leased and did not hand out."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        held = [*self._allowances.values(),
                *(a.spare for a in self._allowances.values() if a.spare is not None)]
        for allowance in held:  # a prefetch not started yet: its waiters go on (and stop)
            _resolve(allowance.refill)
        self._give_back += [(a.lease_id, a.free) for a in held if a.free > 0]
        self._allowances.clear()
        self._by_lease.clear()
        await self._flush_give_back()


def _resolve(waited: asyncio.Future[None] | None) -> None:
    if waited is not None and not waited.done():
        waited.set_result(None)
