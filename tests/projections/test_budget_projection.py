"""Budget spend per scope and period, kept by the projections: calendar periods in a
budget's time zone, late events, budgets set after the usage, holds settled, alerts once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from ledger import budgets
from ledger.events import BudgetThresholdCrossed, parse_event
from ledger.producer import EventBuilder
from ledger.settings import Settings
from projections import make_projection
from projections.rebuild import Rebuilder
from tests.ledger.producer_helpers import consume
from tests.projections.helpers import emit, running_worker, usage_event, wait_for_rows

build = EventBuilder("test")
CHECKPOINTS = "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints"
USAGE = "SELECT count(*) FROM usage_records"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def _spend(dsn: str) -> dict[tuple[str, datetime], Decimal]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT scope, period_start, spent FROM budget_spend "
                                "WHERE spent <> 0")
    finally:
        await conn.close()
    return {(r["scope"], r["period_start"]): r["spent"] for r in rows}


def test_period_starts_follow_the_budget_time_zone() -> None:
    # 23:30 on 31 March in New York (EDT, UTC-4) is 03:30 UTC on 1 April.
    assert budgets.period_start(at("2026-04-01T03:30:00Z"), "day", "America/New_York") == \
        at("2026-03-31T04:00:00Z")
    # 00:01 on 1 April in Tokyo (UTC+9) is 15:01 UTC on 31 March: April already.
    assert budgets.period_start(at("2026-03-31T15:01:00Z"), "month", "Asia/Tokyo") == \
        at("2026-03-31T15:00:00Z")
    assert budgets.period_start(at("2026-03-31T14:59:00Z"), "month", "Asia/Tokyo") == \
        at("2026-02-28T15:00:00Z")
    assert budgets.period_start(at("2026-11-26T10:00:00Z"), "week", "UTC") == \
        at("2026-11-23T00:00:00Z")  # a Monday
    assert budgets.period_start(at("2031-05-05T10:00:00Z"), "total", "Europe/Paris") == \
        budgets.TOTAL_START
    assert budgets.next_reset(at("2026-02-28T15:00:00Z"), "month", "Asia/Tokyo") == \
        at("2026-03-31T15:00:00Z")


async def test_spend_per_scope_and_period_across_boundaries_with_late_events(
    settings: Settings,
) -> None:
    assert settings.database_url
    key_a, key_b, key_c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    setup = [
        build.create_key(api_key_id=key_a, name="a", plaintext_key="sk-a", owner="team-x"),
        build.create_key(api_key_id=key_b, name="b", plaintext_key="sk-b", owner="team-x"),
        build.create_key(api_key_id=key_c, name="c", plaintext_key="sk-c"),
        build.set_budget(scope=f"key:{key_a}", limit_usd="100", period="day",
                         timezone="America/New_York"),
        build.set_budget(scope="owner:team-x", limit_usd="100", period="month",
                         timezone="Asia/Tokyo"),
        build.set_budget(scope=f"key:{key_c}", limit_usd="100", period="total"),
    ]
    moments = ["2026-03-31T03:59:00Z", "2026-03-31T04:01:00Z",  # NY midnight
               "2026-03-31T14:59:00Z", "2026-03-31T15:01:00Z",  # Tokyo month boundary
               "2026-04-01T03:30:00Z", "2026-04-30T23:00:00Z"]
    first = [usage_event(k, when=at(m), cost=Decimal("0.5") + i)
             for i, m in enumerate(moments) for k in (key_a, key_b, key_c)]
    # Late: occurred before everything already projected, arrives last.
    late = [usage_event(k, when=at("2026-03-31T03:00:00Z"), cost=Decimal("0.25"))
            for k in (key_a, key_b, key_c)]
    await emit(settings, setup)
    async with running_worker(settings, ("keys", "usage")):
        await wait_for_rows(settings.database_url, CHECKPOINTS, len(setup))
        await emit(settings, first)
        await wait_for_rows(settings.database_url, USAGE, len(first))
        await emit(settings, late + first[:3])  # and re-sent duplicates
        await wait_for_rows(settings.database_url, USAGE, len(first) + len(late))
        await wait_for_rows(settings.database_url, CHECKPOINTS,
                            len(setup) + len(first) + len(late) + 3)
    expected: dict[tuple[str, datetime], Decimal] = defaultdict(Decimal)
    for event in first + late:
        assert event.cost_usd is not None
        ceilings = {key_a: [(f"key:{key_a}", "day", "America/New_York"),
                            ("owner:team-x", "month", "Asia/Tokyo")],
                    key_b: [("owner:team-x", "month", "Asia/Tokyo")],
                    key_c: [(f"key:{key_c}", "total", "UTC")]}[event.api_key_id]
        for scope, period, tz in ceilings:
            expected[scope, budgets.period_start(event.occurred_at, period, tz)] += event.cost_usd
    assert await _spend(settings.database_url) == dict(expected)
    # total never resets: one row for a month and more of spend
    assert [s for s in expected if s[0] == f"key:{key_c}"] == [(f"key:{key_c}",
                                                                  budgets.TOTAL_START)]


async def test_budgets_and_keys_set_after_their_usage_count_it_once(settings: Settings) -> None:
    assert settings.database_url
    key = uuid.uuid4()
    usage = [usage_event(key, cost=Decimal("1.5")) for _ in range(4)]
    await emit(settings, usage)  # usage of a key not created yet
    async with running_worker(settings, ("keys", "usage")):
        await wait_for_rows(settings.database_url, USAGE, 4)
        await emit(settings, [
            build.create_key(api_key_id=key, name="late", plaintext_key="sk-late",
                             owner="ops", max_budget_usd=Decimal("50")),
            build.set_budget(scope="owner:ops", limit_usd="20", period="week"),
        ])
        await wait_for_rows(settings.database_url, CHECKPOINTS, 6)
        await emit(settings, [usage_event(key, cost=Decimal("1")), *usage[:2]])
        await wait_for_rows(settings.database_url, CHECKPOINTS, 9)
    now = datetime.now(UTC)
    spend = await _spend(settings.database_url)
    assert spend == {
        (f"key:{key}", budgets.period_start(now, "month", "UTC")): Decimal("7.0"),
        ("owner:ops", budgets.period_start(now, "week", "UTC")): Decimal("7.0"),
    }
    # Removing the owner's budget removes its spend row; the key's max_budget_usd stays.
    async with running_worker(settings, ("keys",)):
        await emit(settings, [build.remove_budget(scope="owner:ops")])
        await wait_for_rows(settings.database_url, CHECKPOINTS, 10)
    assert set(await _spend(settings.database_url)) == {
        (f"key:{key}", budgets.period_start(now, "month", "UTC"))}


async def test_holds_settle_with_their_usage_and_overruns_are_measured(
    settings: Settings,
) -> None:
    assert settings.database_url
    key = uuid.uuid4()
    lease = uuid.uuid4()
    start = budgets.period_start(datetime.now(UTC), "month", "UTC")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO budget_leases (lease_id, scope, period, period_start, amount, "
            "expires_at) VALUES ($1, $2, 'month', $3, 10, now() + interval '1 hour')",
            lease, f"key:{key}", start)
    finally:
        await conn.close()
    hold = budgets.hold_id(Decimal("2"), [lease])
    within = usage_event(key, cost=Decimal("1.5")).model_copy(update={"hold_id": hold})
    over = usage_event(key, cost=Decimal("2.75")).model_copy(update={"hold_id": hold})
    await emit(settings, [build.create_key(api_key_id=key, name="k", plaintext_key="sk-h",
                                           max_budget_usd=Decimal("10"))])
    async with running_worker(settings, ("keys", "usage")):
        await wait_for_rows(settings.database_url, CHECKPOINTS, 1)
        await emit(settings, [within, over, within])  # the duplicate settles nothing more
        await wait_for_rows(settings.database_url, CHECKPOINTS, 4)
    conn = await asyncpg.connect(settings.database_url)
    try:
        settled = await conn.fetchval("SELECT settled FROM budget_leases WHERE lease_id = $1",
                                      lease)
        overrun = await conn.fetchrow("SELECT overrun_usd, holds FROM budget_overruns")
    finally:
        await conn.close()
    assert settled == Decimal("4")  # each hold's estimate, once
    assert overrun is not None and (overrun["overrun_usd"], overrun["holds"]) == (
        Decimal("0.75"), 1)


async def test_each_threshold_alerts_once_through_duplicates_and_a_rebuild(
    settings: Settings,
) -> None:
    assert settings.database_url and settings.kafka_bootstrap_servers
    key = uuid.uuid4()
    spends = [usage_event(key, cost=Decimal(c)) for c in ("0.6", "0.3", "0.2")]
    await emit(settings, [
        build.create_key(api_key_id=key, name="k", plaintext_key="sk-al", owner="al"),
        build.set_budget(scope="owner:al", limit_usd="1", period="month",
                         alert_thresholds=[50, 80, 100]),
    ])
    listener = await asyncpg.connect(settings.database_url)
    heard: list[str] = []
    await listener.add_listener("ledger_budget_alert", lambda *args: heard.append(args[3]))
    try:
        async with running_worker(settings, ("keys", "usage")):
            await wait_for_rows(settings.database_url, CHECKPOINTS, 2)
            for event in spends:
                await emit(settings, [event])
                await wait_for_rows(settings.database_url, USAGE,
                                    spends.index(event) + 1)
            await emit(settings, spends)  # re-sent
            await wait_for_rows(settings.database_url, CHECKPOINTS, 8)
            alerts = await listener.fetch(
                "SELECT threshold, spent, event_id FROM budget_alerts ORDER BY threshold")
            await Rebuilder(make_projection("usage"), settings, dsn=settings.database_url,
                            bootstrap_servers=settings.kafka_bootstrap_servers).run()
            after = await listener.fetch(
                "SELECT threshold, spent, event_id FROM budget_alerts ORDER BY threshold")
            spend_after = await _spend(settings.database_url)
            await wait_for_rows(settings.database_url, "SELECT count(*) FROM budget_alerts "
                                "WHERE published_at IS NOT NULL", 3)
    finally:
        await listener.close()
    # On the alerts topic: each threshold once, with the row's event_id (a consumer reading
    # for a while longer sees nothing more).
    published = [parse_event(m.value) for m in await consume(
        settings.kafka_bootstrap_servers, [settings.topic_alerts], 4, timeout_s=3)]
    crossed = [e for e in published if isinstance(e, BudgetThresholdCrossed)]
    assert len(crossed) == len(published) == 3
    assert sorted((e.threshold, e.spent_usd, e.event_id) for e in crossed) == [
        tuple(a) for a in alerts]
    assert [(a["threshold"], a["spent"]) for a in alerts] == [
        (50, Decimal("0.6")), (80, Decimal("0.9")), (100, Decimal("1.1"))]
    assert after == alerts
    assert len(heard) == 3  # one NOTIFY per threshold, none for duplicates or the rebuild
    assert spend_after == {("owner:al", budgets.period_start(datetime.now(UTC), "month",
                                                             "UTC")): Decimal("1.1")}


async def test_a_budget_in_a_zone_postgresql_does_not_know_is_a_dead_letter(
    settings: Settings,
) -> None:
    assert settings.database_url
    event = build.set_budget(scope="owner:z", limit_usd="1", period="day")
    bad = event.model_copy(update={"timezone": "Mars/Olympus_Mons"})
    good = build.set_budget(scope="owner:z", limit_usd="2", period="day",
                            occurred_at=datetime.now(UTC) + timedelta(seconds=1))
    await emit(settings, [bad, good])
    async with running_worker(settings, ("keys",)):
        await wait_for_rows(settings.database_url, CHECKPOINTS, 2)
    conn = await asyncpg.connect(settings.database_url)
    try:
        letters = await conn.fetch("SELECT error FROM dead_letters")
        limit = await conn.fetchval("SELECT limit_usd FROM budgets WHERE scope = 'owner:z'")
    finally:
        await conn.close()
    assert len(letters) == 1 and "Mars/Olympus_Mons" in letters[0]["error"]
    assert limit == Decimal("2")
