"""authorize() and budgets: every ceiling checked, the binding one named, reservations held
from leases without a round trip per request, released, given back on close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger import budgets
from ledger.invalidation import Invalidation
from ledger.keys import hash_key
from readmodels import InvalidArgumentError, ReadModels, ReadModelsClosedError, Reason
from tests.polling import wait_until
from tests.readmodels.conftest import Writer, make_settings


async def set_budget(writer: Writer, scope: str, limit: str, period: str = "month",
                     tz: str = "UTC") -> None:
    async with writer.conn.transaction():
        await writer.conn.execute(
            "INSERT INTO budgets (scope, limit_usd, period, timezone, alert_thresholds, "
            "updated_at) VALUES ($1, $2, $3, $4, '{50,80,100}', now()) ON CONFLICT (scope) "
            "DO UPDATE SET limit_usd = EXCLUDED.limit_usd", scope, Decimal(limit), period, tz)
        await writer._notify(Invalidation(flush_all=True))


async def add_spent(writer: Writer, scope: str, amount: str, period: str = "month") -> None:
    start = budgets.period_start(datetime.now(UTC), period, "UTC")
    async with writer.conn.transaction():
        await writer.conn.execute(
            "INSERT INTO budget_spend (scope, period, period_start, spent) VALUES ($1, $2, $3, "
            "$4) ON CONFLICT (scope, period, period_start) DO UPDATE SET spent = "
            "budget_spend.spent + EXCLUDED.spent", scope, period, start, Decimal(amount))


async def outstanding(conn: asyncpg.Connection, scope: str) -> Decimal:
    value: Decimal = await conn.fetchval(
        "SELECT coalesce(sum(greatest(amount - settled - returned, 0)), 0) FROM budget_leases "
        "WHERE scope = $1 AND expires_at > now()", scope)
    return value


async def test_an_owner_budget_binds_every_key_of_the_owner_and_is_named(
    rm: ReadModels, writer: Writer,
) -> None:
    plain_a, key_a, _ = await writer.add_key(owner="team-x")
    plain_b, _, _ = await writer.add_key(owner="team-x")
    await set_budget(writer, f"key:{key_a}", "10")
    await set_budget(writer, "owner:team-x", "5", "day")
    await writer.settled(rm)
    decision = await rm.keys.authorize(plain_a, "gpt-4o")
    assert decision.allowed and decision.budget is not None
    assert (decision.budget.scope, decision.budget.period) == ("owner:team-x", "day")
    await add_spent(writer, "owner:team-x", "5", "day")
    await add_spent(writer, f"key:{key_a}", "5")
    rm.budgets.spend_moved()
    for plaintext in (plain_a, plain_b):
        refused = await rm.keys.authorize(plaintext, "gpt-4o")
        assert refused.reason is Reason.OVER_BUDGET
        assert refused.budget is not None
        assert (refused.budget.scope, refused.budget.limit_usd, refused.budget.spent) == (
            "owner:team-x", Decimal("5"), Decimal("5"))
    held = await rm.keys.authorize(plain_b, "gpt-4o", estimate_usd=Decimal("0.01"))
    assert held.reason is Reason.OVER_BUDGET and held.hold_id is None
    assert held.budget is not None and held.budget.scope == "owner:team-x"


async def test_reservations_refuse_past_the_cap_and_come_back_on_release(
    rm: ReadModels, writer: Writer,
) -> None:
    plaintext, key_id, _ = await writer.add_key()
    scope = f"key:{key_id}"
    await set_budget(writer, scope, "1.00")
    await writer.settled(rm)
    estimate = Decimal("0.30")
    holds = []
    for _ in range(3):
        decision = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
        assert decision.allowed and decision.hold_id is not None
        holds.append(decision.hold_id)
    refused = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
    assert refused.reason is Reason.OVER_BUDGET and refused.budget is not None
    assert refused.budget.scope == scope
    assert refused.budget.spent + refused.budget.reserved == Decimal("0.90")
    assert await rm.keys.release(holds[0])
    assert not await rm.keys.release(holds[0])  # a second release gives nothing back
    again = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=estimate)
    assert again.allowed
    # A smaller request still fits in what is left.
    assert (await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=Decimal("0.1"))).allowed
    assert not (await rm.keys.authorize(plaintext, "gpt-4o",
                                        estimate_usd=Decimal("0.01"))).allowed


async def test_plentiful_budget_costs_no_round_trip_per_request(
    rm: ReadModels, writer: Writer,
) -> None:
    plaintext, key_id, _ = await writer.add_key(max_budget_usd=Decimal("1000"))
    await set_budget(writer, f"key:{key_id}", "500", "day")
    await writer.settled(rm)
    await rm.keys.authorize(plaintext, "gpt-4o")  # the key and its ceilings are cached
    before = rm.budgets.leases
    for _ in range(2000):
        decision = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=Decimal("0.002"))
        assert decision.allowed and decision.hold_id is not None
    # Two ceilings (the day budget and max_budget_usd), a lease of each per 256 requests.
    assert rm.budgets.leases - before <= 2 * (2000 // 256 + 1)
    assert decision.budget is not None and decision.budget.scope == f"key:{key_id}"


async def test_close_gives_back_what_was_leased_and_not_held(
    pg_dsn: str, writer: Writer,
) -> None:
    plaintext, key_id, _ = await writer.add_key()
    scope = f"key:{key_id}"
    await set_budget(writer, scope, "100")
    async with ReadModels.open(make_settings(pg_dsn)) as rm:
        held = await rm.keys.authorize(plaintext, "gpt-4o", estimate_usd=Decimal("0.5"))
        assert held.allowed
        assert await outstanding(writer.conn, scope) > Decimal("0.5")  # a lease of more
    # Only the open hold stays reserved; the unused allowance went back.
    assert await outstanding(writer.conn, scope) == Decimal("0.5")


async def test_the_next_lease_is_asked_for_after_the_request_that_needs_it_returns(
    rm: ReadModels, writer: Writer,
) -> None:
    """The request whose hold crosses the prefetch point only schedules the next lease: no
    task is created on its path (that cost it 15-25 us), the lease is asked for on the
    loop's next turn, and requests go on holding meanwhile."""
    plaintext, key_id, _ = await writer.add_key()
    await set_budget(writer, f"key:{key_id}", "1000")
    await writer.settled(rm)
    reservations = rm.budgets.reservations
    estimate = Decimal("0.01")
    await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)  # the first lease
    await asyncio.sleep(0.05)
    leases, tasks = rm.budgets.leases, len(reservations._tasks)
    (allowance,) = reservations._allowances.values()
    crossed = 0
    while not allowance.refilling:
        assert (await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)).allowed
        crossed += 1
    assert 0 < crossed < 256  # a lease holds 256 estimates here; a quarter left at the point
    assert (rm.budgets.leases, len(reservations._tasks)) == (leases, tasks)
    assert allowance.refill is not None and not allowance.refill.done()

    async def prefetched() -> bool:
        return allowance.spare is not None

    await wait_until(prefetched, 5.0, "the next lease prefetched")
    assert rm.budgets.leases == leases + 1 and allowance.refill.done()


async def test_a_prefetch_scheduled_when_the_process_closes_leases_nothing(
    pg_dsn: str, writer: Writer,
) -> None:
    """The reservations closed between the request that schedules the next lease and the
    loop's next turn: nothing more is leased, and what was leased goes back."""
    plaintext, key_id, _ = await writer.add_key()
    scope = f"key:{key_id}"
    await set_budget(writer, scope, "1000")
    estimate = Decimal("0.01")
    holds = 0
    async with ReadModels.open(make_settings(pg_dsn)) as rm:
        await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
        holds += 1
        (allowance,) = rm.budgets.reservations._allowances.values()
        while not allowance.refilling:
            await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
            holds += 1
        leases = rm.budgets.leases
        await rm.budgets.reservations.close()
        assert rm.budgets.leases == leases  # close() came first: the prefetch never ran
    assert allowance.refill is not None and allowance.refill.done()
    assert await outstanding(writer.conn, scope) == estimate * holds


async def _cross_the_prefetch_point(rm: ReadModels, plaintext: str, estimate: Decimal) -> Any:
    """Holds until the key's lease schedules its prefetch; the allowance."""
    await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
    (allowance,) = rm.budgets.reservations._allowances.values()
    while not allowance.refilling:
        await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
    return allowance


async def test_a_request_waiting_for_the_next_lease_is_answered_when_the_process_closes(
    pg_dsn: str, writer: Writer,
) -> None:
    """A request waiting for the prefetched lease while close() cancels the prefetch before
    its first step is answered (the read models are closing), not left waiting for good."""
    plaintext, key_id, _ = await writer.add_key()
    await set_budget(writer, f"key:{key_id}", "1000")
    async with ReadModels.open(make_settings(pg_dsn)) as rm:
        reservations = rm.budgets.reservations
        allowance = await _cross_the_prefetch_point(rm, plaintext, Decimal("0.01"))
        key = await rm.keys.get_by_hash(hash_key(plaintext))
        assert key is not None
        slots = await rm.budgets.plan(key)
        # More than is left: it waits for the prefetch, which close() then cancels.
        waiter = asyncio.ensure_future(reservations.reserve(slots, allowance.free + 1))
        await asyncio.ensure_future(reservations.close())
        done, _ = await asyncio.wait({waiter}, timeout=5)
        assert done, "the request was left waiting"
        with pytest.raises(ReadModelsClosedError):
            waiter.result()


async def test_a_lease_taken_while_the_process_closes_goes_back(
    pg_dsn: str, writer: Writer,
) -> None:
    """A request whose lease round trip is under way when the reservations close gives that
    lease back rather than keeping it in a closed process: only holds stay outstanding."""
    plaintext, key_id, _ = await writer.add_key()
    scope = f"key:{key_id}"
    await set_budget(writer, scope, "1000")
    async with ReadModels.open(make_settings(pg_dsn)) as rm:
        reservations = rm.budgets.reservations
        estimate = Decimal("0.01")
        await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
        key = await rm.keys.get_by_hash(hash_key(plaintext))
        assert key is not None
        slots = await rm.budgets.plan(key)
        # Bigger than the lease: it goes to PostgreSQL for a lease of its own, and waits
        # there for the spend row this transaction holds (budget_lease locks it).
        async with writer.conn.transaction():
            await writer.conn.execute(
                "SELECT 1 FROM budget_spend WHERE scope = $1 FOR UPDATE", scope)
            waiter = asyncio.ensure_future(reservations.reserve(slots, Decimal(5)))

            async def leasing() -> bool:
                waiting: int = await writer.conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%budget_lease%'")
                return waiting == 1

            await wait_until(leasing, 5.0, "the lease waiting for the spend row")
            await reservations.close()
        with pytest.raises(ReadModelsClosedError):
            await asyncio.wait_for(waiter, 5)
    # Only the first hold stays outstanding: the lease that came back after close went back.
    assert await outstanding(writer.conn, scope) == estimate


async def test_a_bad_estimate_is_refused_naming_it(rm: ReadModels, writer: Writer) -> None:
    """For every key, whatever its ceilings or state: a caller's bug is not an answer."""
    capped, _, _ = await writer.add_key(max_budget_usd=Decimal("1"))
    free, _, _ = await writer.add_key()
    for plaintext in (capped, free, "sk-no-such-key"):
        for bad in (Decimal("-1"), Decimal("NaN"), 0.5):
            with pytest.raises(InvalidArgumentError, match="estimate_usd"):
                await rm.keys.authorize(plaintext, "gpt-4o",
                                        estimate_usd=bad)  # type: ignore[arg-type]


async def test_a_lazy_estimate_is_computed_only_when_a_ceiling_applies(
    rm: ReadModels, writer: Writer,
) -> None:
    free, _, _ = await writer.add_key()
    capped, capped_id, _ = await writer.add_key()
    await set_budget(writer, f"key:{capped_id}", "1.00")
    await writer.settled(rm)
    asked: list[str] = []

    def estimate_for(name: str, amount: str | None) -> Callable[[], Awaitable[Decimal | None]]:
        async def estimate() -> Decimal | None:
            asked.append(name)
            return None if amount is None else Decimal(amount)
        return estimate

    unlimited = await rm.keys.authorize(free, "gpt-4o", estimate=estimate_for("free", "0.5"))
    assert unlimited.allowed and unlimited.hold_id is None and asked == []
    held = await rm.keys.authorize(capped, "gpt-4o", estimate=estimate_for("capped", "0.75"))
    assert held.allowed and held.hold_id is not None and asked == ["capped"]
    # The second estimate does not fit next to the first hold: refused as estimate_usd is.
    refused = await rm.keys.authorize(capped, "gpt-4o", estimate=estimate_for("capped", "0.5"))
    assert refused.reason is Reason.OVER_BUDGET
    # No estimate at all: checked against spent + open holds, nothing held.
    unheld = await rm.keys.authorize(capped, "gpt-4o", estimate=estimate_for("capped", None))
    assert unheld.allowed and unheld.hold_id is None and len(asked) == 3
    with pytest.raises(InvalidArgumentError, match="not both"):
        await rm.keys.authorize(capped, "gpt-4o", estimate_usd=Decimal("0.1"),
                                estimate=estimate_for("capped", "0.1"))


async def test_concurrent_requests_in_one_process_never_pass_the_cap(
    rm: ReadModels, writer: Writer,
) -> None:
    plaintext, key_id, _ = await writer.add_key()
    await set_budget(writer, f"key:{key_id}", "2.00")
    await writer.settled(rm)

    async def one() -> bool:
        return (await rm.keys.authorize(plaintext, "m", estimate_usd=Decimal("0.07"))).allowed

    allowed = sum(await asyncio.gather(*(one() for _ in range(64))))
    assert allowed == 28  # 28 x 0.07 = 1.96; a 29th would pass 2.00


async def test_prefetched_leases_strand_nothing_while_the_process_runs(
    rm: ReadModels, writer: Writer,
) -> None:
    """Far from the cap the next lease is prefetched; near it leases shrink. Requests that
    run until refused get the whole budget, before any close gives leftovers back."""
    plaintext, key_id, _ = await writer.add_key()
    await set_budget(writer, f"key:{key_id}", "40")
    await writer.settled(rm)
    estimates = [Decimal("0.001"), Decimal("0.002"), Decimal("0.005"), Decimal("0.01")]
    granted: list[Decimal] = []

    async def task(n: int) -> None:
        refusals = 0
        while refusals < 3:
            estimate = estimates[(n + len(granted)) % len(estimates)]
            decision = await rm.keys.authorize(plaintext, "m", estimate_usd=estimate)
            if decision.allowed:
                granted.append(estimate)
                refusals = 0
            else:
                refusals += 1
            await asyncio.sleep(0)

    await asyncio.gather(*(task(n) for n in range(32)))
    assert Decimal(40) - max(estimates) <= sum(granted) <= Decimal(40)
    assert rm.budgets.leases < len(granted) / 20  # mostly served from memory
