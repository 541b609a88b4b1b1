"""Usage: keyset pagination with ties, totals, monthly summaries, month-to-date spend."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from readmodels import InvalidArgumentError, ReadModels, UsageCursor
from readmodels.usage import month_start
from tests.polling import wait_until
from tests.readmodels.conftest import Writer


async def test_keyset_pagination_with_ties(rm: ReadModels, writer: Writer) -> None:
    key_id, other = uuid.uuid4(), uuid.uuid4()
    base = datetime(2026, 3, 31, 23, 59, 58, tzinfo=UTC)  # spans a month (partition) boundary
    expected = []
    claude = set()
    for i in range(12):
        # Four rows share each timestamp: only event_id orders them.
        occurred = base + timedelta(seconds=i // 4)
        event = await writer.add_usage(key_id, "gpt-4o" if i % 3 else "claude",
                                       occurred, cost=Decimal("0.01"))
        expected.append((occurred, event))
        if i % 3 == 0:
            claude.add(event)
        await writer.add_usage(other, "gpt-4o", occurred)
    expected.sort()
    start, end = base - timedelta(hours=1), base + timedelta(hours=1)
    seen: list[tuple[datetime, uuid.UUID]] = []
    cursor: UsageCursor | None = None
    pages = 0
    while True:
        page = await rm.usage.records_by_key(key_id, start, end, after=cursor, limit=5)
        pages += 1
        seen.extend((r.occurred_at, r.event_id) for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected and pages == 3
    by_model = await rm.usage.records_by_model("claude", start, end, limit=100)
    assert {r.event_id for r in by_model.items} == claude and by_model.next_cursor is None
    assert by_model.items[0].metadata == {"team": "a"}
    narrow = await rm.usage.records_by_key(key_id, base, base + timedelta(seconds=1))
    assert len(narrow.items) == 4  # end is exclusive
    with pytest.raises(InvalidArgumentError):
        await rm.usage.records_by_key(key_id, end, start)
    with pytest.raises(InvalidArgumentError):
        await rm.usage.records_by_key(key_id, start.replace(tzinfo=None), end)


async def test_totals(rm: ReadModels, writer: Writer) -> None:
    key_id = uuid.uuid4()
    at = datetime(2026, 5, 10, 12, tzinfo=UTC)
    await writer.add_usage(key_id, "gpt-4o", at, prompt=100, completion=50,
                           cost=Decimal("0.10"))
    await writer.add_usage(key_id, "gpt-4o", at + timedelta(minutes=1), prompt=1,
                           completion=2, cost=Decimal("0.000000000000000001"), status="error")
    await writer.add_usage(key_id, "gpt-4o", at + timedelta(minutes=2))  # unpriced
    await writer.add_usage(key_id, "gpt-4o", at + timedelta(days=40), cost=Decimal(5))
    totals = await rm.usage.totals(key_id, at, at + timedelta(days=1))
    assert totals.requests == 3 and totals.errors == 1 and totals.unpriced_requests == 1
    assert (totals.prompt_tokens, totals.completion_tokens) == (111, 57)
    assert totals.cost_usd == Decimal("0.100000000000000001")  # exact, never float
    empty = await rm.usage.totals(uuid.uuid4(), at, at + timedelta(days=1))
    assert empty.requests == 0 and empty.cost_usd == 0


async def test_totals_across_months_use_summaries_for_whole_months(
    rm: ReadModels, writer: Writer
) -> None:
    key_id = uuid.uuid4()
    rng = random.Random(5)
    base = datetime(2026, 1, 20, tzinfo=UTC)
    for _ in range(120):
        at = base + timedelta(seconds=rng.randrange(0, 90 * 86400))
        cost = None if rng.random() < 0.1 else Decimal(rng.randrange(1, 10**6)) / 10**9
        await writer.add_usage(key_id, rng.choice(["a", "b"]), at, prompt=rng.randrange(99),
                               cost=cost, status=rng.choice(["success", "error"]))
    await writer.summarize()
    ranges = [
        (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)),  # whole months
        (datetime(2026, 1, 25, 13, tzinfo=UTC), datetime(2026, 4, 2, 7, tzinfo=UTC)),
        (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC)),
        (datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)),  # empty
    ]
    for start, end in ranges:
        expected = await writer.conn.fetchrow(
            """SELECT count(*) AS requests, count(*) FILTER (WHERE status = 'error') AS errors,
               count(*) FILTER (WHERE cost_source = 'unpriced') AS unpriced,
               COALESCE(sum(prompt_tokens), 0) AS prompt, COALESCE(sum(cost_usd), 0) AS cost
               FROM usage_records WHERE api_key_id = $1 AND occurred_at >= $2
               AND occurred_at < $3""", key_id, start, end)
        assert expected is not None
        got = await rm.usage.totals(key_id, start, end)
        assert (got.requests, got.errors, got.unpriced_requests, got.prompt_tokens,
                got.cost_usd) == tuple(expected.values()), (start, end)


async def test_input_and_generated_images_are_read_apart(rm: ReadModels, writer: Writer) -> None:
    key_id = uuid.uuid4()
    april, may = datetime(2026, 4, 10, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC)
    await writer.add_usage(key_id, "gemini-3-pro-image-preview", april, images=2, output_images=1)
    await writer.add_usage(key_id, "gemini-3-pro-image-preview", april, output_images=4)
    await writer.add_usage(key_id, "gpt-4o", may, images=3)
    await writer.summarize()
    page = await rm.usage.records_by_key(key_id, april, may + timedelta(days=1))
    assert sorted((r.images, r.output_images) for r in page.items) == [(0, 4), (2, 1), (3, 0)]
    # April whole (from the summaries) and part of May (from the records).
    totals = await rm.usage.totals(key_id, datetime(2026, 4, 1, tzinfo=UTC), may + timedelta(1))
    assert (totals.images, totals.output_images) == (5, 5)
    month = await rm.usage.monthly(key_id, april.date())
    assert (month.totals.images, month.totals.output_images) == (2, 5)
    assert [s.totals.output_images for s in month.by_model] == [5]


async def test_monthly_and_summaries(rm: ReadModels, writer: Writer) -> None:
    key_id = uuid.uuid4()
    await writer.add_spend(key_id, "gpt-4o", date(2026, 1, 1), Decimal("1.25"))
    await writer.add_spend(key_id, "claude", date(2026, 1, 1), Decimal("0.75"))
    await writer.add_spend(key_id, "gpt-4o", date(2026, 2, 1), Decimal("2"))
    month = await rm.usage.monthly(key_id, date(2026, 1, 17))
    assert month.month == date(2026, 1, 1)
    assert month.totals.cost_usd == Decimal("2.00") and month.totals.requests == 2
    assert [s.model for s in month.by_model] == ["claude", "gpt-4o"]
    listed = await rm.usage.summaries(key_id)
    assert [(s.month, s.model) for s in listed] == [
        (date(2026, 1, 1), "claude"), (date(2026, 1, 1), "gpt-4o"), (date(2026, 2, 1), "gpt-4o")]
    assert len(await rm.usage.summaries(key_id, since=date(2026, 2, 5))) == 1
    assert len(await rm.usage.summaries(key_id, until=date(2026, 1, 31))) == 2


async def test_month_to_date_spend_is_cached_and_evicted(rm: ReadModels, writer: Writer) -> None:
    key_id = uuid.uuid4()
    this_month = month_start(datetime.now(UTC))
    assert await rm.usage.month_to_date_spend(key_id) == Decimal(0)
    await writer.add_spend(key_id, "gpt-4o", this_month, Decimal("3.5"))

    async def updated() -> bool:
        return await rm.usage.month_to_date_spend(key_id) == Decimal("3.5")

    await wait_until(updated, 1.0, "updated", interval=0.005)
    hits = rm.stats().caches["spend"].hits
    await rm.usage.month_to_date_spend(key_id)
    assert rm.stats().caches["spend"].hits == hits + 1
