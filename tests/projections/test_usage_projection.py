"""Usage projection against the real broker and PostgreSQL: dedup, months, poison."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext

import asyncpg

from ledger.settings import Settings
from tests.projections.helpers import (
    emit,
    fetchval,
    ground_truth,
    random_usage,
    running_worker,
    send_raw,
    summaries,
    usage_event,
    wait_for_rows,
)


async def test_each_event_counted_once_across_duplicates_and_months(settings: Settings) -> None:
    rng = random.Random(7)
    keys = [uuid.uuid4() for _ in range(5)]
    events = random_usage(rng, keys, 2000)
    duplicates = rng.sample(events, 100)
    await emit(settings, events + duplicates)
    assert settings.database_url
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 2000)
        await emit(settings, duplicates)  # re-sent again after they were projected
        await wait_for_rows(
            settings.database_url,
            "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints", 2200)
    assert await fetchval(settings.database_url, "SELECT count(*) FROM usage_records") == 2000
    assert await summaries(settings.database_url) == ground_truth(events)
    partitions = await fetchval(
        settings.database_url,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_records'::regclass")
    assert partitions == 3  # September, October, November 2026


async def test_late_event_lands_in_its_own_month(settings: Settings) -> None:
    key = uuid.uuid4()
    now_event = usage_event(key, when=datetime(2026, 11, 20, tzinfo=UTC))
    late = usage_event(key, when=datetime(2026, 8, 31, 23, 59, 59, tzinfo=UTC))
    await emit(settings, [now_event, late])
    assert settings.database_url
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 2)
    months = await fetchval(
        settings.database_url,
        "SELECT string_agg(month::text, ',' ORDER BY month) FROM monthly_usage_summaries")
    assert months == "2026-08-01,2026-11-01"


async def test_poison_goes_to_dead_letters_and_the_partition_keeps_flowing(
    settings: Settings,
) -> None:
    key = uuid.uuid4()
    good = [usage_event(key) for _ in range(20)]
    valid = json.loads(good[0].model_dump_json())
    newer = dict(valid, event_id=str(uuid.uuid4()), schema_version=99)
    unknown = dict(valid, event_id=str(uuid.uuid4()), type="usage.teleported")
    negative = dict(valid, event_id=str(uuid.uuid4()), prompt_tokens=-5)
    k = str(key).encode()
    poison = [b"{not json", json.dumps(newer).encode(), json.dumps(unknown).encode(),
              json.dumps(negative).encode()]
    await emit(settings, good[:10])
    assert settings.kafka_bootstrap_servers and settings.database_url
    await send_raw(settings.kafka_bootstrap_servers,
                   [(settings.topic_usage, k, body) for body in poison])
    await emit(settings, good[10:])
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 20)
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM dead_letters", 4)
    kinds = await fetchval(
        settings.database_url,
        "SELECT string_agg(error_kind, ',' ORDER BY error_kind) FROM dead_letters")
    assert kinds == "invalid_event,invalid_event,unknown_type,unsupported_schema_version"
    raw = await fetchval(settings.database_url,
                         "SELECT value FROM dead_letters WHERE error_kind = 'unknown_type'")
    assert json.loads(raw)["type"] == "usage.teleported"  # kept whole


async def test_event_id_is_unique_even_when_a_resend_changes_occurred_at(
    settings: Settings,
) -> None:
    """A gateway that rebuilds the envelope on retry keeps the id but not the timestamp."""
    key = uuid.uuid4()
    first = usage_event(key, when=datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))
    retried = first.model_copy(update={"occurred_at": datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)})
    await emit(settings, [first])
    await emit(settings, [retried])  # separately: a later batch, another month's partition
    assert settings.database_url
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url,
                            "SELECT coalesce(sum(next_offset), 0) FROM projection_checkpoints", 2)
    assert await fetchval(settings.database_url, "SELECT count(*) FROM usage_records") == 1
    assert await fetchval(settings.database_url,
                          "SELECT sum(requests) FROM monthly_usage_summaries") == 1


async def test_decimals_arrive_exactly_whatever_their_written_form(settings: Settings) -> None:
    """The batch stages numerics as their str() (projections.usage): an exponent form, 30
    places and the largest amounts must land digit for digit, in records and summaries."""
    key = uuid.uuid4()
    costs = [Decimal("1.5E-7"), Decimal("0.000000000000000000000000000001"),
             Decimal("123456789.123456789123456789"), Decimal("0"), Decimal("1E+2")]
    events = [usage_event(key, cost=c, when=datetime(2026, 11, 20, tzinfo=UTC)) for c in costs]
    events.append(usage_event(key, when=datetime(2026, 11, 20, tzinfo=UTC)).model_copy(
        update={"input_seconds": Decimal("12.000000000000000000000000000001"),
                "output_seconds": Decimal("3E-30")}))
    await emit(settings, events)
    assert settings.database_url
    async with running_worker(settings, ("usage",)):
        await wait_for_rows(settings.database_url, "SELECT count(*) FROM usage_records", 6)
    conn = await asyncpg.connect(settings.database_url)
    try:
        stored = {r["event_id"]: r for r in await conn.fetch(
            "SELECT event_id, cost_usd, input_seconds, output_seconds FROM usage_records")}
        total = await conn.fetchrow(
            "SELECT cost_usd, input_seconds, output_seconds FROM monthly_usage_summaries")
    finally:
        await conn.close()
    for event in events:
        row = stored[event.event_id]
        assert (row["cost_usd"], row["input_seconds"], row["output_seconds"]) == (
            event.cost_usd, event.input_seconds, event.output_seconds)
    assert total is not None
    with localcontext(Context(prec=100)):  # Python's default 28 digits would round the sum
        assert total["cost_usd"] == sum(e.cost_usd or 0 for e in events)
    assert total["input_seconds"] == Decimal("12.000000000000000000000000000001")
    assert total["output_seconds"] == Decimal("3E-30")
